"""What people run beside the app: the load tool, the demo, a throwaway PostgreSQL, a launcher.

Nothing in the runtime (what ``make run`` and a user's app import) imports them.
"""
