"""The seed's program with the supervisor under it instead of a
ProcessPoolExecutor: the sum over i in [0, 10_000_000) of (i*i) % 10007, in
100 chunks on 2 workers. Prints 49259937824.

    pip install .            # at the root of the repository
    python3 examples/heavy_map.py

heavy_chunk is the seed's function, unchanged; a worker imports this file by
path, under another name, so the block under the __main__ guard runs once.
"""

import supervisor_worker as sw


def heavy_chunk(start, end):
    return sum(i * i % 10007 for i in range(start, end))


if __name__ == "__main__":
    total = sum(sw.map(heavy_chunk, range(0, 10_000_000), chunk=100_000, workers=2))
    print(total)
