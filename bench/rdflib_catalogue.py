#!/usr/bin/env python3
"""The peer for the DCAT-AP export: build the same catalogue graph triple by
triple in rdflib and serialise it as Turtle — what a CKAN site does with
ckanext-dcat (its serialisers build an rdflib Graph and call serialize).
The graph is read from CityTrust's own /catalog.ttl (not timed), so both
sides write exactly the same triples.

    bench/rdflib_catalogue.py http://127.0.0.1:8080
"""
import resource, sys, time, urllib.request

from rdflib import Graph

base = sys.argv[1].rstrip("/")
source = Graph().parse(data=urllib.request.urlopen(base + "/catalog.ttl").read().decode(), format="turtle")
triples = list(source)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
g = Graph()
for prefix, ns in source.namespaces():
    g.bind(prefix, ns)
for tr in triples:
    g.add(tr)
out = g.serialize(format="turtle")
elapsed = time.perf_counter() - t
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"rdflib (ckanext-dcat's way): {len(triples)} triples built and serialised as Turtle in {elapsed:.2f} s, "
      f"{len(out) / 1e6:.1f} MB; peak RSS of the process {rss1 / 1024:.0f} MB (was {rss0 / 1024:.0f} MB before)")
