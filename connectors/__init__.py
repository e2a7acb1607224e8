"""Our WhatsApp channels: the webhook receiver (its own process) and, inside the Rasa server, the input
channels with their worker and sender (docs/architecture.md).

Code here runs on the `rasa` env (Python 3.10, Rasa 3.6.21 and what it ships).
"""
