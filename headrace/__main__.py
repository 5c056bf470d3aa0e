from headrace.cli import entry

entry()
