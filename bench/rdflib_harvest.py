#!/usr/bin/env python3
"""The peer of bench/harvest.sh: what ckanext-dcat's DCAT harvester does with
a feed — parse it whole into an rdflib graph, then walk each dcat:Dataset for
its title, description, keywords, publisher and distributions' formats.

    .venv/bin/python bench/rdflib_harvest.py catalog.ttl
"""
import resource, sys, time

from rdflib import Graph, Namespace
from rdflib.namespace import RDF

DCAT = Namespace("http://www.w3.org/ns/dcat#")
DCT = Namespace("http://purl.org/dc/terms/")

path = sys.argv[1]
t0 = time.perf_counter()
g = Graph()
g.parse(path, format="turtle")
t1 = time.perf_counter()
records = 0
for d in g.subjects(RDF.type, DCAT.Dataset):
    _ = (g.value(d, DCT.title), g.value(d, DCT.description), list(g.objects(d, DCAT.keyword)),
         g.value(d, DCT.publisher),
         [g.value(x, DCT.format) for x in g.objects(d, DCAT.distribution)])
    records += 1
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(f"  rdflib: {len(g)} triples, {records} datasets; parse {t1 - t0:.2f} s, walk {t2 - t1:.2f} s, "
      f"total {t2 - t0:.2f} s; peak RSS {peak} MB")
