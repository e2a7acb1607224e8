"""When and how a conversation goes to a person: trigger rules, office hours, summaries.

Shared by the Rasa process (the trigger policy), the action server (the handoff action) and the
console; pure Python, no third-party imports, so it loads in both environments.
"""
