"""Our Rasa input channels (WhatsApp Cloud API, Evolution API); they run inside the Rasa server.

Code here runs on the `rasa` env (Python 3.10, Rasa 3.6.21 and what it ships).
"""
