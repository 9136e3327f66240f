"""Reference tables derived from public data; see README.md in this folder."""
