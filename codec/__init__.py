"""Encrypted payloads: the AES-GCM payload codec and the codec server that lets the Web UI
and the `temporal` CLI show what it encrypted."""
