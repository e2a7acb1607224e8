"""Local WhatsApp sandbox: a Graph API stand-in plus a chat page where a designer plays the customer.

Started by `make run` when WHATSAPP_ACCESS_TOKEN is not set. The page posts signed
Cloud API webhooks to the channel, the same path production traffic takes.
"""
