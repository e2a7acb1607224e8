#!/usr/bin/env bash
# Usage: find-python.sh 3.10 [explicit-path]
# Prints the path of a working Python X.Y interpreter, or explains in one line why there is none.
set -u
want="$1"
explicit="${2:-}"
works() { [ -n "$1" ] && "$1" -c "import sys, venv; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$want' else 1)" >/dev/null 2>&1; }
if [ -n "$explicit" ]; then
  if works "$explicit"; then echo "$explicit"; exit 0; fi
  echo "error: PYTHON${want/./}=$explicit is not a working Python $want with venv" >&2; exit 1
fi
for candidate in "$(command -v "python$want" 2>/dev/null)" "$HOME"/.pyenv/versions/"$want".*/bin/python"$want" /usr/bin/python"$want" /usr/local/bin/python"$want"; do
  if works "$candidate"; then echo "$candidate"; exit 0; fi
done
echo "error: Python $want not found: install it (e.g. 'pyenv install $want' or 'apt-get install python$want python$want-venv') or pass PYTHON${want/./}=/path/to/python$want" >&2
exit 1
