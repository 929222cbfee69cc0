"""FileBrowser: the NAS file service (path jail, users, file API, transfers, images)."""
