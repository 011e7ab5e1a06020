// Notification receiver for bench/ngsi_bench.py: answers every POST with
// 204 and records, for each notified entity, the delay from the update's
// send time (the entity's `sent` attribute, epoch milliseconds, written by
// the sender just before it sent the update) to this receipt.
// GET /stats -> {count, notifications, p50, p90, p99, max}; POST /reset.
import http from "node:http";

const port = Number(process.argv[2] || 0);
let delays = [];
let notifications = 0;

const now = () => performance.timeOrigin + performance.now();

function quantile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const at = now();
    if (req.method === "GET" && req.url === "/stats") {
      const s = Float64Array.from(delays).sort();
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({
        count: s.length, notifications,
        p50: quantile(s, 0.5), p90: quantile(s, 0.9), p99: quantile(s, 0.99), max: s.length ? s[s.length - 1] : null,
      }));
      return;
    }
    if (req.method === "POST" && req.url === "/reset") {
      delays = [];
      notifications = 0;
      res.writeHead(204);
      res.end();
      return;
    }
    notifications += 1;
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      for (const e of body.data || []) {
        const sent = typeof e.sent === "object" && e.sent !== null ? e.sent.value : e.sent;
        if (typeof sent === "number") delays.push(at - sent);
      }
    } catch {
      // not JSON: counted, not timed
    }
    res.writeHead(204);
    res.end();
  });
});
server.keepAliveTimeout = 60000;
server.listen(port, "127.0.0.1", () => {
  console.log(server.address().port);
});
