"""The seed's CPU job in Python: the sum over i in [start, end) of (i*i) % 10007.

Served by the Python worker SDK (worker/python), either as
`python3 -m supervisor_worker heavy.py:handler` (see heavy-python.toml) or by
running this file, which calls `supervisor_worker.serve` itself.
"""


def heavy_chunk(start, end):
    return sum((i * i) % 10007 for i in range(start, end))


def handler(chunk):
    # An int is answered as its JSON text, as the Rust squares-worker does.
    return heavy_chunk(chunk.start, chunk.end)


if __name__ == "__main__":
    from supervisor_worker import serve

    serve(handler)
