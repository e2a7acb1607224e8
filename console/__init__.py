"""The agent console: handoff queue, transcripts with the bot's reasoning, replies, hand-back, close.

A Sanic app in the `app` env. It reads Rasa's tracker store (SQL) and keeps its own tables (agents,
sessions, the queue projected from the tracker events, notes, canned responses, audit log). Replies,
hand-backs and closes go through the channels' authenticated agent routes inside Rasa.
"""
