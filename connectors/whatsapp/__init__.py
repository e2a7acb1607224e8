"""WhatsApp Cloud API channel: webhook parsing, rendering, Graph API client, Rasa channel."""
