"""The whole-loop benchmark, in pieces: counts.py reads what each service process counted, seed.py stores a
long history, kiosk.py plays one request through the loop, and __main__.py runs and prints it all."""
