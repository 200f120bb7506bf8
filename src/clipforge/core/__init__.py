"""The bottom layer every other package may use: atomic writes, the cache folder and verified
downloads, process-group setup, the check that names a missing optional extra, and the base of the
errors whose message tells the user what to do. It imports nothing else of clipforge."""
