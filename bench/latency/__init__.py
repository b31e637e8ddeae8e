"""Submit latency and throughput of Linli against the floor of the bare operations one request needs.

One module per measurement; __main__.py says what a run does, in order, and is its command line
(python -m bench.latency, or python bench/submit_latency.py):

    plan.py      the workload both runs share: the district, the volunteers, the requests
    tracking.py  the open-loop driver, and what each request saw from its scheduled send
    services.py  the services run: the four services as processes, through linli.api.intake.submit
    units.py     unit costs: each bare operation, serially, on the idle servers
    floor.py     the floor run: intake's and the matcher's operations with bare nats-py and PyMongo
    cpu.py       CPU seconds per process, and the CPU of processes that are not ours
    report.py    the printed table, the overhead ratios and the machine
"""
