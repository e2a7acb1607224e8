"""Knowledge base: documents → chunks → hybrid search (embedded SQLite store or Weaviate).

Used by the action server (answers) and the console (agent assist); app env only.
"""
