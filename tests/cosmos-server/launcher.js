#!/usr/bin/env node
// Loopback Cosmos DB (NoSQL) stand-in for ragchat tests.
//
// Starts @vercel/cosmosdb-server (in-memory, HTTPS with its bundled self-signed
// cert) on 127.0.0.1, patches the gaps that stop the Rust SDK
// (`azure_data_cosmos`), and runs a small plain-HTTP admin server for fault
// injection (429 throttling, outage). See README.md.
//
// Usage: node launcher.js [--port N] [--admin-port N]
//        (env COSMOS_PORT / COSMOS_ADMIN_PORT; default 0 = free port)
// Prints one JSON line on stdout once both servers listen:
//   {"endpoint":"https://127.0.0.1:P/","port":P,"admin":"http://127.0.0.1:A","pid":N}
// Everything else (logs, package errors) goes to stderr.
"use strict";

const http = require("http");
const { AsyncLocalStorage } = require("async_hooks");

const PKG = "@vercel/cosmosdb-server/lib";
const { createHttpsServer } = require(PKG);
// index.js looks up `routes.default(req)` on every request, so replacing the
// export below takes effect for the server we create.
const routes = require(`${PKG}/routes`);
const handlers = {
  readDocument: require(`${PKG}/handler/read-document`).default,
  queryDocuments: require(`${PKG}/handler/query-documents`).default,
  readPkRanges: require(`${PKG}/handler/read-partition-key-ranges`).default,
  createDocument: require(`${PKG}/handler/create-document`).default,
  upsertDocument: require(`${PKG}/handler/upsert-document`).default,
  replaceDocument: require(`${PKG}/handler/replace-document`).default,
  patchDocument: require(`${PKG}/handler/patch-document`).default,
  deleteDocument: require(`${PKG}/handler/delete-document`).default,
  batchDocuments: require(`${PKG}/handler/batch-documents`).default,
  readDocuments: require(`${PKG}/handler/read-documents`).default
};
const Documents = require(`${PKG}/account/documents`).default;
const { parsePartitionKey } = require(`${PKG}/utils/get-partition-from-header`);

// ---------------------------------------------------------------- arguments
function argValue(name, envName) {
  const i = process.argv.indexOf(name);
  const raw = i >= 0 ? process.argv[i + 1] : process.env[envName];
  if (raw === undefined || raw === "") return 0;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    process.stderr.write(`invalid ${name} / ${envName}: ${raw}\n`);
    process.exit(2);
  }
  return n;
}
const HOST = "127.0.0.1";
const wantedPort = argValue("--port", "COSMOS_PORT");
const wantedAdminPort = argValue("--admin-port", "COSMOS_ADMIN_PORT");

const log = msg => process.stderr.write(`[cosmos-server] ${msg}\n`);

// ---------------------------------------------------------------- state
const stats = {
  requests: 0, // all Cosmos requests received
  doc_requests: 0, // requests under /dbs/*/colls/*/docs (incl. throttled)
  throttled: 0, // 429s served by the injector
  doc_writes: 0, // create/upsert/replace/patch/delete answered 2xx
  doc_reads: 0, // point reads answered 200
  doc_queries: 0 // queries / read-feeds answered 200
};
let throttle = { remaining: 0, retryAfterMs: 0, writesOnly: false };
let outage = false;

const DOC_PATH = /^\/+dbs\/[^/]+\/colls\/[^/]+\/docs(\/|$)/;
const WRITE_HANDLERS = new Set([
  handlers.createDocument,
  handlers.upsertDocument,
  handlers.replaceDocument,
  handlers.patchDocument,
  handlers.deleteDocument
]);
const MINIMAL_HANDLERS = new Set([
  handlers.createDocument,
  handlers.upsertDocument,
  handlers.replaceDocument,
  handlers.patchDocument
]);

const notFound = res => {
  res.statusCode = 404;
  return {
    code: "NotFound",
    message: "Entity with the specified id does not exist in the system."
  };
};
const badRequest = (res, message) => {
  res.statusCode = 400;
  return { code: "BadRequest", message };
};

// Partition key value of the request header for partition scoping of queries:
// undefined when absent, unparsable, `[]` or `[{}]` (= "no partition key").
function headerPartitionValue(req) {
  let raw = req.headers["x-ms-documentdb-partitionkey"];
  if (Array.isArray(raw)) [raw] = raw;
  if (!raw) return undefined;
  try {
    const v = JSON.parse(raw);
    const first = Array.isArray(v) ? v[0] : v;
    if (first === undefined || (first !== null && typeof first === "object")) return undefined;
    return first;
  } catch (_) {
    return undefined;
  }
}

// PATCH (5): queries carrying a partition key header are scoped to that
// logical partition, as on Azure. The package runs every query over all
// documents (and rejects a query whose WHERE lacks the key with 400). The
// scope travels with the request through AsyncLocalStorage; the package's
// query runs synchronously, so swapping the document map for the call is safe.
const queryScope = new AsyncLocalStorage();
const originalQuery = Documents.prototype.query;
Documents.prototype.query = function scopedQuery(params, opts) {
  const scope = queryScope.getStore();
  if (!scope || !scope.scoped) return originalQuery.call(this, params, opts);
  const all = this._data;
  this._data = new Map(
    [...all].filter(([, item]) => this._getPartition(item.read()) === scope.value)
  );
  try {
    return originalQuery.call(this, params, opts);
  } finally {
    this._data = all;
  }
};

// ---------------------------------------------------------------- handler patches
function wrapHandler(handler) {
  return async (account, req, res, params) => {
    // PATCH (2): a point read of a missing id, or with the wrong partition
    // key, makes the package's handler dereference `undefined` -> 500 (which
    // SDKs retry). Answer 404 NotFound as Azure does; a malformed partition
    // key header is a 400.
    if (handler === handlers.readDocument) {
      const collection = account.database(params.dbId).collection(params.collId);
      if (collection.read()) {
        let pk;
        try {
          pk = parsePartitionKey(req.headers["x-ms-documentdb-partitionkey"], params.docId);
        } catch (err) {
          return badRequest(res, err.message);
        }
        if (!collection.document(params.docId, pk).read()) return notFound(res);
      }
    }

    // PATCH (3): the Rust SDK runs whole-container queries with
    // `x-ms-documentdb-partitionkeyrangeid` (and no partition key); the
    // package rejects them with 400 "missing partition keys" unless the
    // cross-partition header is set. Treat them as cross-partition.
    let scope = { scoped: false };
    if (handler === handlers.queryDocuments) {
      const value = headerPartitionValue(req);
      if (value !== undefined) {
        scope = { scoped: true, value }; // PATCH (5), see above
        req.headers["x-ms-documentdb-query-enablecrosspartition"] = "true";
      } else if (req.headers["x-ms-documentdb-partitionkeyrangeid"] !== undefined) {
        req.headers["x-ms-documentdb-query-enablecrosspartition"] = "true";
      }
    }

    let body;
    try {
      body = await queryScope.run(scope, () => handler(account, req, res, params));
    } catch (err) {
      // Malformed JSON body or partition key header: 400, not 500.
      if (err instanceof SyntaxError || /^Failed to parse/.test(err && err.message)) {
        return badRequest(res, err.message);
      }
      throw err; // the package turns this into a 500 and logs it
    }
    const ok = res.statusCode >= 200 && res.statusCode < 300;

    if (ok && WRITE_HANDLERS.has(handler)) stats.doc_writes += 1;
    else if (ok && handler === handlers.readDocument) stats.doc_reads += 1;
    else if (ok && (handler === handlers.queryDocuments || handler === handlers.readDocuments))
      stats.doc_queries += 1;

    // PATCH (1): partition key ranges are created with the number 0 as id;
    // Azure (and the Rust driver) use strings. Copy, don't mutate the store.
    if (handler === handlers.readPkRanges && body && Array.isArray(body.PartitionKeyRanges)) {
      body = {
        ...body,
        PartitionKeyRanges: body.PartitionKeyRanges.map(r => ({ ...r, id: String(r.id) }))
      };
    }

    // PATCH (4): `Prefer: return=minimal` on a document write -> same status
    // and etag header, empty body (content-length 0), as Azure answers.
    if (ok && MINIMAL_HANDLERS.has(handler) && /return=minimal/i.test(String(req.headers.prefer || ""))) {
      if (body && body._etag) res.setHeader("etag", body._etag);
      res.setHeader("content-length", "0");
      return undefined; // the package then calls res.end(undefined)
    }
    return body;
  };
}

const originalRoute = routes.default;
routes.default = req => {
  const route = originalRoute(req);
  if (!route) return route;
  const [params, handler] = route;
  return [params, wrapHandler(handler)];
};

// ---------------------------------------------------------------- cosmos server
// `keepAlive: true` makes the package answer `connection: keep-alive` instead
// of `connection: close` (it is also Node's TCP keep-alive option).
const server = createHttpsServer({ keepAlive: true });
// Longer than hyper/reqwest's 90 s idle pool timeout, so the server never
// closes a connection the client is about to reuse.
server.keepAliveTimeout = 120000;
server.headersTimeout = 125000;

// The package creates its in-memory account on every "listening" event, which
// would wipe all data when we listen again after an outage. Keep its listener
// only for the first listen.
const packageListeningListeners = server.listeners("listening");

// Fault injection runs before the package's request handler.
const [packageRequestHandler] = server.listeners("request");
server.removeAllListeners("request");
server.on("request", (req, res) => {
  stats.requests += 1;
  let pathname = "";
  try {
    pathname = new URL(req.url, "https://x").pathname;
  } catch (_) {
    /* malformed url: let the package answer "no route" */
  }
  if (DOC_PATH.test(pathname)) {
    stats.doc_requests += 1;
    if (throttle.remaining > 0 && (!throttle.writesOnly || isWrite(req))) {
      throttle.remaining -= 1;
      stats.throttled += 1;
      const payload = JSON.stringify({ code: "429", message: "Request rate is large" });
      // Drain the request body first so the keep-alive connection stays usable.
      req.on("error", () => {});
      req.resume();
      req.on("end", () => {
        res.writeHead(429, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(payload),
          "x-ms-retry-after-ms": String(throttle.retryAfterMs),
          "x-ms-substatus": "3200",
          "x-ms-request-charge": "0",
          "x-ms-activity-id": require("crypto").randomUUID()
        });
        res.end(payload);
      });
      return;
    }
  }
  req.on("error", err => log(`request error: ${err.message}`));
  packageRequestHandler(req, res);
});

// Document writes: create/upsert (POST that is not a query), replace, patch, delete.
function isWrite(req) {
  if (["PUT", "PATCH", "DELETE"].includes(req.method)) return true;
  const query =
    String(req.headers["x-ms-documentdb-isquery"] || "").toLowerCase() === "true" ||
    String(req.headers["content-type"] || "").includes("query+json");
  return req.method === "POST" && !query;
}

// Track sockets so an outage (and shutdown) can cut every connection. During an outage the
// listener stays bound (so the port cannot be taken) and every new connection is reset.
const sockets = new Set();
server.on("connection", socket => {
  if (outage) {
    socket.destroy();
    return;
  }
  sockets.add(socket);
  socket.on("close", () => sockets.delete(socket));
  socket.on("error", () => {});
});
server.on("error", err => log(`cosmos server error: ${err.message}`));

let cosmosPort = 0;
function listenCosmos(port) {
  return new Promise((resolve, reject) => {
    const onError = err => reject(err);
    server.once("error", onError);
    server.listen(port, HOST, () => {
      server.removeListener("error", onError);
      resolve(server.address().port);
    });
  });
}

async function outageStart() {
  outage = true;
  for (const s of sockets) s.destroy();
}

async function outageEnd() {
  outage = false;
}

// ---------------------------------------------------------------- admin server
function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", c => {
      size += c.length;
      if (size > 1 << 20) reject(new Error("body too large"));
      else chunks.push(c);
    });
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString().trim();
      if (!text) return resolve({});
      try {
        resolve(JSON.parse(text));
      } catch (err) {
        reject(err);
      }
    });
    req.on("error", reject);
  });
}

const admin = http.createServer((req, res) => {
  const send = (status, obj) => {
    const payload = JSON.stringify(obj);
    res.writeHead(status, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(payload)
    });
    res.end(payload);
  };
  (async () => {
    const route = `${req.method} ${(req.url || "").split("?")[0]}`;
    const body = req.method === "POST" ? await readJson(req) : {};
    switch (route) {
      case "GET /health":
        return send(200, { ok: true, outage, port: cosmosPort });
      case "GET /stats":
        return send(200, {
          ...stats,
          throttle_pending: throttle.remaining,
          outage,
          open_connections: sockets.size
        });
      case "POST /stats/reset":
        for (const k of Object.keys(stats)) stats[k] = 0;
        return send(200, { ok: true });
      case "POST /fault/throttle": {
        const count = Number(body.count);
        const ms = Number(body.retry_after_ms === undefined ? 100 : body.retry_after_ms);
        const writesOnly = body.writes_only === true;
        if (!Number.isInteger(count) || count < 0 || !Number.isInteger(ms) || ms < 0) {
          return send(400, {
            error: 'expected {"count":N,"retry_after_ms":M,"writes_only":bool} with integers >= 0'
          });
        }
        throttle = { remaining: count, retryAfterMs: ms, writesOnly };
        return send(200, { ok: true, throttle_pending: count, retry_after_ms: ms, writes_only: writesOnly });
      }
      case "POST /fault/clear":
        throttle = { remaining: 0, retryAfterMs: 0, writesOnly: false };
        return send(200, { ok: true });
      case "POST /outage/start":
        await outageStart();
        return send(200, { ok: true, outage });
      case "POST /outage/end":
        await outageEnd();
        return send(200, { ok: true, outage, port: cosmosPort });
      default:
        return send(404, { error: `no admin route ${route}` });
    }
  })().catch(err => {
    if (!res.headersSent) send(err instanceof SyntaxError ? 400 : 500, { error: String(err.message) });
    else res.destroy();
  });
});
admin.on("error", err => log(`admin server error: ${err.message}`));

// ---------------------------------------------------------------- lifecycle
function shutdown(signal) {
  log(`${signal}: shutting down`);
  for (const s of sockets) s.destroy();
  server.close();
  admin.close();
  if (typeof admin.closeAllConnections === "function") admin.closeAllConnections();
  setTimeout(() => process.exit(0), 200).unref();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
// --exit-with-stdin: a test harness holds our stdin open; if it dies (even by SIGKILL), stdin
// closes and we go too, instead of lingering.
if (process.argv.includes("--exit-with-stdin")) {
  process.stdin.on("end", () => shutdown("stdin closed"));
  process.stdin.on("close", () => shutdown("stdin closed"));
  process.stdin.resume();
}
process.on("SIGINT", () => shutdown("SIGINT"));
// A test server should survive a bug in one request rather than take the
// whole test run down with it.
process.on("uncaughtException", err => log(`uncaught: ${err && err.stack}`));
process.on("unhandledRejection", err => log(`unhandled rejection: ${err && err.stack}`));

(async () => {
  cosmosPort = await listenCosmos(wantedPort);
  for (const fn of packageListeningListeners) server.removeListener("listening", fn);
  await new Promise((resolve, reject) => {
    admin.once("error", reject);
    admin.listen(wantedAdminPort, HOST, resolve);
  });
  const adminPort = admin.address().port;
  process.stdout.write(
    `${JSON.stringify({
      endpoint: `https://${HOST}:${cosmosPort}/`,
      port: cosmosPort,
      admin: `http://${HOST}:${adminPort}`,
      pid: process.pid
    })}\n`
  );
})().catch(err => {
  log(`failed to start: ${err.message}`);
  process.exit(1);
});
