"""Our NLU components for the Rasa pipeline (rasa env, loaded by config.yml)."""
