"""A stand-in for GraphFrames' `GraphFrame(v, e).connectedComponents()`, for running
text-dedup's `minhash_spark.py` offline (bench_dedup.py puts this folder first on its
PYTHONPATH).

text-dedup 0.4.0 finds connected components with GraphFrames, whose JVM package is fetched from
Maven at run time (`--packages`); this machine has no network, and the `graphframes-py` wheel
has no JAR. This gives the same result GraphFrames documents (every vertex with `component` =
the smallest vertex id of its component) by collecting the edges to the driver and running
union-find there, which is what llmtools does too below a million edges. Everything else in
the script (signatures, banding, the group-by, the edges, the joins, the output) is
text-dedup's own code.
"""

from __future__ import annotations


class GraphFrame:
    def __init__(self, vertices, edges):
        self.vertices, self.edges = vertices, edges

    def connectedComponents(self):  # noqa: N802 (GraphFrames' name)
        parent: dict[int, int] = {}

        def find(x: int) -> int:
            root = x
            while parent.get(root, root) != root:
                root = parent[root]
            while parent.get(x, x) != root:
                parent[x], x = root, parent[x]
            return root

        for src, dst in self.edges.select("src", "dst").collect():
            a, b = find(src), find(dst)
            if a != b:
                parent[max(a, b)] = min(a, b)
        ids = [row[0] for row in self.vertices.select("id").collect()]
        spark = self.vertices.sparkSession
        return spark.createDataFrame([(i, find(i)) for i in ids], "id long, component long")
