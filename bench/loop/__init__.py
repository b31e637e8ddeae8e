"""The whole-loop benchmark, in pieces: counts.py reads what each service process counted, seed.py stores a
long history, floor.py measures the loop's floor on the same servers, kiosk.py plays one request through the
loop, rate.py measures latency and throughput, and __main__.py runs and prints it all."""
