"""The vocabulary every layer shares: the plan schema, languages, frame sizes, the critique and its labels.

Modules here import nothing else of the pack (only each other), so a backend, a pipeline stage and a
node all read the same definitions without depending on one another.
"""
