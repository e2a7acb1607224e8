"""Baileys WhatsApp numbers through Evolution API (v2): the `evolution` Rasa channel."""
