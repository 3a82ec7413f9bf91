// The explorer (book/_ext/cnnbook_explorer.py): being written.
