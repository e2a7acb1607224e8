"""Custom actions of the Voltbay assistant (served by rasa-sdk's action server)."""
