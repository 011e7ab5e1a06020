"""Interoperability against the running demo, with real third-party tools:

- the catalogue (/catalog.ttl, and /catalog.jsonld, which must be the same
  graph) validated with pySHACL against the official DCAT-AP 3.0.1 shapes
  (e2e/dcat-ap/): zero violations;
- federation: this demo harvests its own /catalog.ttl, and the CKAN API of
  a second demo node (SECOND_URL), and finds the entries with their source;
- the CKAN-compatible API driven through the real `ckanapi` client:
  package_search with a query and a facet, package_show, organization_list
  with all_fields, an open resource downloaded through its returned URL, and
  CKAN-style errors for bad input — each checked against CityTrust's own API.

Run: BASE_URL=http://127.0.0.1:PORT .venv/bin/python e2e/interop_test.py
"""

import base64
import csv as csv_module
import hashlib
import io
import json
import os
import pathlib
import unittest
import time
import urllib.parse

import ckanapi
import requests
from pyshacl import validate
from rdflib import Graph, Namespace, URIRef
from rdflib.compare import isomorphic
from rdflib.namespace import RDF

BASE = os.environ["BASE_URL"].rstrip("/")
SHAPES = pathlib.Path(__file__).parent / "dcat-ap"
SH = Namespace("http://www.w3.org/ns/shacl#")
DCAT = Namespace("http://www.w3.org/ns/dcat#")
DCT = Namespace("http://purl.org/dc/terms/")
EU = "http://publications.europa.eu/resource/authority"


def ours(path):
    """CityTrust's own JSON API, the reference the CKAN answers must match."""
    r = requests.get(BASE + path, timeout=30)
    r.raise_for_status()
    return r.json()


def shapes(name):
    g = Graph().parse(SHAPES / name)
    dangling = [(s, o) for s, o in g.subject_objects(SH.property) if g.value(o, SH.path) is None]
    for s, o in dangling:
        g.remove((s, SH.property, o))
    return g, len(dangling)


def violations(data):
    out = []
    for name in ["dcat-ap-3.0.1-SHACL.ttl", "dcat-ap-3.0.1-ranges.ttl"]:
        g, dropped = shapes(name)
        conforms, report, text = validate(data, shacl_graph=g, inference="none")
        results = list(report.subjects(RDF.type, SH.ValidationResult))
        bad = [r for r in results if report.value(r, SH.resultSeverity) == SH.Violation]
        print(f"  {name}: {len(results)} result(s), {len(bad)} violation(s) "
              f"({dropped} dangling shape reference(s) of the release dropped)")
        if bad:
            out.append(text)
    return out


class Dcat(unittest.TestCase):
    def test_catalogue_conforms_to_dcat_ap_3(self):
        ttl = requests.get(BASE + "/catalog.ttl", timeout=60)
        self.assertEqual(ttl.status_code, 200)
        self.assertTrue(ttl.headers["content-type"].startswith("text/turtle"))
        graph = Graph().parse(data=ttl.text, format="turtle")
        print(f"\n/catalog.ttl: {len(graph)} triples")
        self.assertEqual(violations(graph), [])

        jsonld = requests.get(BASE + "/catalog.jsonld", timeout=60)
        self.assertEqual(jsonld.headers["content-type"], "application/ld+json")
        same = Graph().parse(data=jsonld.text, format="json-ld")
        self.assertTrue(isomorphic(graph, same), "the JSON-LD and Turtle catalogues differ")

        # Every catalogue entry is there, closed ones without distributions;
        # a stream's live entities are a distribution served by the NGSI-LD API.
        ngsi = URIRef(f"{BASE}/ngsi-ld/v1")
        self.assertIn((ngsi, RDF.type, DCAT.DataService), graph)
        streams = 0
        listed = ours("/api/v1/datasets?per_page=100")
        self.assertEqual(len(set(graph.subjects(RDF.type, DCAT.Dataset))), listed["total"])
        for d in listed["items"]:
            node = URIRef(f"{BASE}/datasets/{d['id']}#dataset")
            self.assertIn((node, RDF.type, DCAT.Dataset), graph)
            rights = graph.value(node, DCT.accessRights)
            dists = list(graph.objects(node, DCAT.distribution))
            if d["spectrum"] == "closed":
                self.assertEqual(rights, URIRef(f"{EU}/access-right/NON_PUBLIC"))
                self.assertEqual(dists, [], d["id"])
            elif d["spectrum"] == "open":
                self.assertEqual(rights, URIRef(f"{EU}/access-right/PUBLIC"))
            else:
                self.assertEqual(rights, URIRef(f"{EU}/access-right/RESTRICTED"))
            live = [x for x in dists if graph.value(x, DCAT.accessService) == ngsi]
            if d.get("stream") and d["spectrum"] != "closed":
                streams += 1
                self.assertEqual(len(live), 1, d["id"])
                self.assertTrue(str(graph.value(live[0], DCAT.accessURL)).startswith(f"{ngsi}/entities?type="))
            else:
                self.assertEqual(live, [], d["id"])
        self.assertGreater(streams, 0, "the demo has a live stream")

    def test_the_shapes_do_catch_a_broken_catalogue(self):
        # A control: without a description (mandatory in DCAT-AP) an entry violates the shapes.
        graph = Graph().parse(data=requests.get(BASE + "/datasets/barcelona-air-quality.ttl", timeout=30).text,
                              format="turtle")
        node = URIRef(f"{BASE}/datasets/barcelona-air-quality#dataset")
        graph.remove((node, DCT.description, None))
        self.assertNotEqual(violations(graph), [])

    def test_one_entry_conforms_too(self):
        graph = Graph().parse(data=requests.get(BASE + "/datasets/barcelona-air-quality.ttl", timeout=30).text,
                              format="turtle")
        self.assertEqual(violations(graph), [])


class Ckan(unittest.TestCase):
    def setUp(self):
        self.ckan = ckanapi.RemoteCKAN(BASE, user_agent="citytrust-interop-test/1 (+ckanapi)")

    def test_package_search_with_a_query_and_a_facet(self):
        result = self.ckan.action.package_search(q="barcelona", **{"facet.field": '["organization"]', "rows": 100})
        reference = ours("/api/v1/datasets?q=barcelona&per_page=100")
        self.assertGreater(result["count"], 0)
        self.assertEqual(result["count"], reference["total"])
        self.assertEqual({p["name"] for p in result["results"]}, {d["id"] for d in reference["items"]})
        by_org = {}
        for d in reference["items"]:
            by_org[d["owner_organization_id"]] = by_org.get(d["owner_organization_id"], 0) + 1
        self.assertEqual(result["facets"]["organization"], by_org)
        self.assertEqual(sum(i["count"] for i in result["search_facets"]["organization"]["items"]),
                         result["count"])

        # package_show of a returned id matches the catalogue entry.
        name = result["results"][0]["name"]
        package = self.ckan.action.package_show(id=name)
        entry = ours(f"/api/v1/datasets/{name}")
        self.assertEqual(package["title"], entry["title"])
        self.assertEqual(package["notes"], entry["description"])
        self.assertEqual(package["owner_org"], entry["owner_organization_id"])
        self.assertEqual([t["name"] for t in package["tags"]], entry["keywords"])
        self.assertEqual(package["isopen"], entry["spectrum"] == "open")

    def test_organization_list_with_all_fields(self):
        orgs = self.ckan.action.organization_list(all_fields=True)
        reference = ours("/api/v1/organizations")
        reference = reference["items"] if isinstance(reference, dict) else reference
        self.assertEqual({o["name"] for o in orgs}, {o["id"] for o in reference})
        titles = {o["id"]: o["name"] for o in reference}
        for o in orgs:
            self.assertEqual(o["title"], titles[o["name"]])
            total = ours(f"/api/v1/datasets?organization={urllib.parse.quote(o['name'])}&per_page=1")["total"]
            self.assertEqual(o["package_count"], total, o["name"])

    def test_an_open_resource_downloads_through_its_returned_url(self):
        result = self.ckan.action.package_search(fq="spectrum:open tags:\"air quality\"", rows=5)
        self.assertGreater(result["count"], 0)
        package = result["results"][0]
        csv = next(r for r in package["resources"] if r["format"] == "CSV")
        self.assertEqual(self.ckan.action.resource_show(id=csv["id"])["url"], csv["url"])
        response = requests.get(csv["url"], timeout=60)
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response.headers["content-type"].startswith("text/csv"))
        # The bytes are what the log entry of the read says were served.
        digest = hashlib.sha256(response.content).digest()
        self.assertIn(base64.b64encode(digest).decode(), response.headers["repr-digest"])
        self.assertIn("citytrust-log-entry", {k.lower() for k in response.headers})
        # And they are the latest version, whole: its columns and its rows.
        latest = ours(f"/api/v1/datasets/{package['name']}/versions")[0]
        rows = list(csv_module.reader(io.StringIO(response.text)))
        self.assertEqual(rows[0], [c["name"] for c in latest["columns"]])
        self.assertEqual(len(rows) - 1, latest["rows"])

    def test_bad_input_gets_ckan_errors(self):
        with self.assertRaises(ckanapi.errors.ValidationError) as e:
            self.ckan.action.package_search(rows="many")
        self.assertEqual(e.exception.error_dict["rows"], ["Invalid integer"])
        with self.assertRaises(ckanapi.errors.SearchQueryError):
            self.ckan.action.package_search(fq='tags:"unclosed')
        with self.assertRaises(ckanapi.errors.NotFound):
            self.ckan.action.package_show(id="no-such-dataset")
        with self.assertRaises(ckanapi.errors.CKANAPIError):
            self.ckan.call_action("package_purge", {"id": "x"})
        # And the statuses CKAN gives them.
        statuses = {
            "package_purge?id=x": 400,
            "package_search?rows=many": 409,
            "package_search?fq=tags:%22unclosed": 400,
            "package_show?id=no-such-dataset": 404,
        }
        for path, status in statuses.items():
            self.assertEqual(requests.get(f"{BASE}/api/3/action/{path}", timeout=30).status_code, status, path)


class Federation(unittest.TestCase):
    """Harvesting: the demo's own DCAT-AP catalogue, and a second node's CKAN API."""

    @classmethod
    def setUpClass(cls):
        r = requests.post(BASE + "/api/v1/auth/token",
                          json={"username": "admin", "password": "demo-password"}, timeout=30)
        r.raise_for_status()
        cls.auth = {"Authorization": "Bearer " + r.json()["token"]}

    def register(self, id, url, kind):
        r = requests.post(BASE + "/api/v1/remote-catalogues", headers=self.auth, timeout=120,
                          json={"id": id, "name": f"Harvested {id}", "url": url, "kind": kind})
        self.assertEqual(r.status_code, 201, r.text)
        c = r.json()
        report = c["last_harvest"]
        print(f"\n  {id}: {report['records']} records, {report['added']} added, "
              f"{report['rejected']} rejected, {report['bytes']} bytes")
        self.assertEqual(report["outcome"], "succeeded", report)
        self.assertEqual(report["rejected"], 0, report["rejected_records"])
        return c

    def listed(self, base):
        """The entries a catalogue lists, not withdrawn, by landing page."""
        graph = Graph().parse(data=requests.get(base + "/catalog.ttl", timeout=60).text, format="turtle")
        adms = Namespace("http://www.w3.org/ns/adms#")
        withdrawn = URIRef(EU + "/dataset-status/WITHDRAWN")
        return {str(graph.value(d, DCAT.landingPage)): str(graph.value(d, DCT.title))
                for d in graph.subjects(RDF.type, DCAT.Dataset)
                if graph.value(d, adms.status) != withdrawn}

    def entries(self, source):
        out, page = [], 1
        while True:
            r = requests.get(BASE + "/api/v1/federated-entries",
                             params={"source": source, "per_page": 100, "page": page}, timeout=30)
            r.raise_for_status()
            body = r.json()
            out += body["items"]
            if len(out) >= body["total"] or not body["items"]:
                return out
            page += 1

    def test_the_demo_harvests_its_own_dcat_ap_catalogue(self):
        c = self.register("self-ttl", BASE + "/catalog.ttl", "dcat")
        listed = self.listed(BASE)
        self.assertEqual(c["entries"], len(listed))
        got = {e["landing_page"]: e["title"] for e in self.entries("self-ttl")}
        self.assertEqual(got, listed)
        # Found by a word of a title, with the source facet counting it.
        word = sorted(listed.values())[0].split()[0]
        r = requests.get(BASE + "/api/v1/federated-entries", params={"q": word}, timeout=30).json()
        self.assertIn("self-ttl", [s["value"] for s in r["sources"]])
        # Harvested again, nothing changed.
        r = requests.post(BASE + "/api/v1/remote-catalogues/self-ttl/harvest", headers=self.auth, timeout=120)
        self.assertEqual(r.status_code, 200, r.text)
        again = r.json()
        self.assertEqual((again["added"], again["updated"], again["removed"], again["unchanged"]),
                         (0, 0, 0, len(listed)))

    def test_the_demo_harvests_a_second_nodes_ckan_api(self):
        second = os.environ["SECOND_URL"].rstrip("/")
        c = self.register("neighbour", second, "ckan")
        listed = self.listed(second)
        self.assertEqual(c["entries"], len(listed))
        client = ckanapi.RemoteCKAN(second)
        count = client.action.package_search(rows=0)["count"]
        self.assertGreaterEqual(count, len(listed))
        got = {e["title"] for e in self.entries("neighbour")}
        self.assertEqual(got, set(listed.values()))
        page = requests.get(BASE + "/datasets", params={"source": "neighbour"}, timeout=30).text
        self.assertIn(f"{len(listed)} datasets from another catalogue", page)



class Dataspace(unittest.TestCase):
    """The Dataspace Protocol between two running trusts: each pins the
    other, the demo's analyst asks the second node for a shared dataset, the
    second node's trustees approve, and the analyst reads it through the
    demo — the second node deciding (another purpose is refused) and logging."""

    @staticmethod
    def token(base, user):
        r = requests.post(base + "/api/v1/auth/token",
                          json={"username": user, "password": "demo-password"}, timeout=30)
        r.raise_for_status()
        return {"Authorization": "Bearer " + r.json()["token"]}

    def pin(self, base, other, id):
        me = requests.get(other + "/dsp/participant", timeout=30).json()
        r = requests.post(base + "/api/v1/remote-catalogues", headers=self.token(base, "admin"), timeout=120,
                          json={"id": id, "name": f"Trust {id}", "url": other + "/catalog.ttl", "kind": "dcat",
                                "participant": {"id": me["participantId"], "key": me["key"]}})
        self.assertIn(r.status_code, (201, 409), r.text)  # 409: pinned by an earlier run

    def test_the_demos_analyst_asks_a_second_trust_and_reads_under_its_agreement(self):
        second = os.environ["SECOND_URL"].rstrip("/")
        self.pin(BASE, second, "dsp-second")
        self.pin(second, BASE, "dsp-first")
        catalog = requests.post(second + "/dsp/catalog/request", timeout=60, json={
            "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
            "@type": "CatalogRequestMessage"}).json()
        analyst = self.token(BASE, "analyst")
        org = requests.get(BASE + "/api/v1/me", headers=analyst, timeout=30).json()["organization_ids"][0]
        entries = {e["source"]["remote_id"]: e["id"] for e in
                   requests.get(BASE + "/api/v1/federated-entries",
                                params={"source": "dsp-second", "per_page": 100}, timeout=30).json()["items"]}
        checklist = {q: "Compared with the demo city's own figures." for q in
                     ["justified", "benefits_and_risks", "proportionate", "without_personal_data", "power_to_share"]}
        asked = None
        trustee = self.token(second, "trustee1")

        def request_for(dataset):
            listed = requests.get(second + "/api/v1/access-requests", headers=trustee, timeout=30).json()
            return max((r for r in listed if r["requester"] == "dsp.dsp-first" and dataset in r["dataset_ids"]),
                       key=lambda r: r["created_at"])

        # The first shared dataset the second trust lets an outsider ask for
        # rows of, for research, that its trustees can vote on at once (a
        # request the charter opens for public comment waits two weeks).
        for d in catalog.get("dataset", []):
            entry = entries.get(f"{second}/datasets/{d['@id']}#dataset")
            if entry is None:
                continue
            for level in ["identified", "pseudonymised"]:
                r = requests.post(BASE + f"/api/v1/federated-entries/{entry}/negotiations", headers=analyst,
                                  timeout=60, json={"organization_id": org, "level": level, "purpose": "research",
                                                    "benefit": "A comparison across two cities.",
                                                    "checklist": checklist})
                if r.status_code != 201:
                    continue
                request = request_for(d["@id"])
                if request["status"] in ("under_review", "approved"):
                    asked = (d["@id"], r.json(), request)
                    break
            if asked:
                break
        self.assertIsNotNone(asked, "no dataset of the second trust could be asked for")
        dataset, negotiation, request = asked
        print(f"\n  asked for {dataset}: {negotiation['state']}, {request['status']} there")
        self.assertEqual(negotiation["state"], "REQUESTED")
        # The second trust's trustees decide, through its API.
        if request["status"] != "approved":
            for t in ["trustee1", "trustee2", "trustee3"]:
                r = requests.post(second + f"/api/v1/access-requests/{request['id']}/votes",
                                  headers=self.token(second, t), timeout=30,
                                  json={"vote": "approve", "reason": "A neighbouring city's comparison."})
                self.assertIn(r.status_code, (200, 409), r.text)
        # Both trusts' workers carry it through.
        state = None
        for _ in range(120):
            mine = requests.get(BASE + "/api/v1/me/remote-requests", headers=analyst, timeout=30).json()
            state = next(n for n in mine if n["consumer_pid"] == negotiation["consumer_pid"])
            if (state.get("transfer") or {}).get("state") == "STARTED":
                break
            time.sleep(0.5)
        self.assertEqual(state["state"], "FINALIZED", state)
        self.assertEqual(state["transfer"]["state"], "STARTED", state)
        data = BASE + f"/api/v1/remote-requests/{negotiation['consumer_pid']}/data"
        r = requests.get(data, headers=analyst, params={"format": "csv"}, timeout=60)
        self.assertEqual(r.status_code, 200, r.text)
        self.assertIn("citytrust-provider-log-entry", r.headers)
        rows = list(csv_module.reader(io.StringIO(r.text)))
        print(f"  read {len(rows) - 1} rows of {dataset} through the demo")
        self.assertGreater(len(rows), 1)
        # Another purpose: refused by the second trust, nothing of the data.
        r = requests.get(data, headers=analyst, params={"format": "csv", "purpose": "commercial"}, timeout=60)
        self.assertEqual(r.status_code, 403, r.text)
        self.assertNotIn(",".join(rows[1]), r.text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
