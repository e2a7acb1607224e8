"""Project tooling (stdlib only, run with the app env's Python)."""
