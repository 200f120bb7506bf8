"""The bottom layer every other package may use: atomic writes, the cache folder and verified
downloads, process-group setup, and the check that names a missing optional extra. It imports
nothing else of clipforge."""
