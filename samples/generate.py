"""Generate the bundled sample Segment export (deterministic): `python samples/generate.py` from the repo root."""
import gzip, json, random
from pathlib import Path
from datetime import datetime, timedelta, timezone
rnd = random.Random(7)
root = Path("samples/segment")
users = [f"user-{i:03d}" for i in range(1, 13)]
tz = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "Europe/Berlin"]
base = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)
def ts(d): return d.isoformat().replace("+00:00", "Z")
def common(i, t, uid, anon=None):
    sent = t + timedelta(seconds=1)
    return {"messageId": f"sample-{i:05d}", "userId": uid, "anonymousId": anon or f"anon-{uid}",
            "timestamp": ts(t), "originalTimestamp": ts(t), "sentAt": ts(sent), "receivedAt": ts(sent + timedelta(milliseconds=120)),
            "version": 2, "channel": "mobile" if i % 2 else "client",
            "context": {"library": {"name": "analytics-ios", "version": "4.1.0"}, "locale": "en-US",
                        "timezone": tz[i % 4], "ip": f"203.0.113.{i % 250}", "userAgent": "Mozilla/5.0 (iPhone)",
                        "app": {"name": "Landline Demo", "version": "3.2.1", "build": "321"},
                        "os": {"name": "iOS", "version": "18.1"},
                        "device": {"id": f"dev-{uid}", "advertisingId": f"ad-{uid}", "manufacturer": "Apple", "model": "iPhone16,2", "type": "ios"}}}
files = {}
i = 0
day1 = root / "segment-logs" / "ios-app" / "1764028800000"
lines1, lines2 = [], []
for n, uid in enumerate(users):
    i += 1
    t = base + timedelta(minutes=n)
    m = common(i, t, uid)
    m.update({"type": "identify", "traits": {"email": f"{uid}@example.com", "phone": f"+3361234{n:04d}", "firstName": "Sam",
              "address": {"country": ["FR", "US", "JP", "DE"][n % 4]}, "plan": ["free", "pro"][n % 2]}})
    m["context"]["device"]["token"] = f"fcm-token-{uid}"
    lines1.append(m)
events = ["Product Viewed", "Added to Cart", "Order Completed", "Signed In"]
for k in range(48):
    i += 1
    uid = users[k % len(users)]
    t = base + timedelta(minutes=20 + k)
    m = common(i, t, uid)
    kind = k % 6
    if kind == 4:
        m.update({"type": "screen", "name": "Cart", "properties": {"items": k % 5}})
    elif kind == 5:
        m.update({"type": "page", "name": "Pricing", "properties": {"path": "/pricing", "url": "https://example.com/pricing", "title": "Pricing"}})
    else:
        m.update({"type": "track", "event": events[kind], "properties": {"sku": f"SKU-{k:03d}", "price": round(rnd.uniform(5, 90), 2), "currency": "EUR"}})
    (lines1 if k < 24 else lines2).append(m)
# duplicates (Segment keeps ~1% of duplicate messageIds; client retries reuse them)
lines2 += [lines1[15], lines1[20]]
# bad records
bad = ['{"type":"track","userId":"user-001","messageId":"sample-bad-1","timestamp":"2026-11-25T09:00:00Z"}',
       '{"type":"track","event":"Broken","messageId":"sample-bad-2","timestamp":"2026-11-25T09:00:00Z"}',
       '{"type": "track", "event": "Truncated JSON", "userId": "user-002"',
       '{"type":"track","event":"Price","userId":"user-003","messageId":"sample-bad-4","timestamp":"2026-11-25T09:00:00Z","properties":{"price":NaN}}']
f1 = day1 / "ios-app-0001.json.gz"
f2 = root / "segment-logs" / "ios-app" / "1764115200000" / "ios-app-0002.json.gz"
for path, lines in ((f1, [json.dumps(x) for x in lines1]), (f2, [json.dumps(x) for x in lines2] + bad)):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(filename="", mode="wb", fileobj=path.open("wb"), mtime=0) as g:
        g.write(("\n".join(lines) + "\n").encode())
(root / "segment-logs" / "dummy-object.txt").write_text("")
print(len(lines1), len(lines2) + len(bad))
