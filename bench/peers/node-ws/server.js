'use strict';
// A broadcast server on Node's `ws` package, speaking the subset of the wshub
// protocol that `wshub bench` uses, in its fastest honest configuration:
//
//   GET /ws?rooms=a,b    upgrade; a `welcome` first, then events as JSON text
//   POST /api/events     {"room","type","payload"} -> 202 {"id","seq","recipients"}
//
// Each event is serialised once into a Buffer and that Buffer is handed to
// every member's `send` (no per-recipient JSON or string encoding);
// permessage-deflate is off. A member whose unsent data passes SEND_LIMIT is
// closed with 4009, as wshub closes a slow consumer. Run with
// `node server.js --bind 127.0.0.1:0`; the first stdout line is
// {"event":"listening","addr":"127.0.0.1:PORT","epoch":"…"}.

const http = require('node:http');
const { randomUUID } = require('node:crypto');
const { WebSocketServer } = require('ws');

const MAX_BODY_BYTES = 65536;
const SEND_LIMIT_BYTES = 16 * 1024 * 1024;
const ROOM = /^[A-Za-z0-9_.:-]{1,128}$/;

const bindAt = process.argv.indexOf('--bind');
const bind = bindAt > 0 ? process.argv[bindAt + 1] : '127.0.0.1:8001';
const colon = bind.lastIndexOf(':');
const host = bind.slice(0, colon);
const port = Number(bind.slice(colon + 1));
const epoch = randomUUID();

/** room name -> { seq, members: Set<WebSocket> } */
const rooms = new Map();

function room(name) {
  let r = rooms.get(name);
  if (!r) {
    r = { seq: 0, members: new Set() };
    rooms.set(name, r);
  }
  return r;
}

function envelope(type, payload, fields) {
  return {
    type,
    payload,
    correlation_id: randomUUID(),
    timestamp: new Date().toISOString(),
    ...fields,
  };
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

function error(res, status, code, message) {
  reply(res, status, { error: { code, message } });
}

function publish(event) {
  const r = room(event.room);
  r.seq += 1;
  const id = randomUUID();
  const frame = Buffer.from(
    JSON.stringify(envelope(event.type, event.payload, { id, room: event.room, seq: r.seq })),
  );
  let recipients = 0;
  for (const ws of r.members) {
    if (ws.readyState !== ws.OPEN) continue;
    if (ws.bufferedAmount > SEND_LIMIT_BYTES) {
      ws.close(4009, 'slow consumer');
      continue;
    }
    ws.send(frame, { binary: false });
    recipients += 1;
  }
  return { id, seq: r.seq, recipients };
}

const server = http.createServer((req, res) => {
  if (req.url !== '/api/events') return error(res, 404, 'not_found', `no route ${req.url}`);
  if (req.method !== 'POST') return error(res, 405, 'method_not_allowed', 'POST only');
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size <= MAX_BODY_BYTES) chunks.push(chunk);
  });
  req.on('end', () => {
    if (size > MAX_BODY_BYTES) return error(res, 413, 'payload_too_large', 'body too large');
    let event;
    try {
      event = JSON.parse(Buffer.concat(chunks));
    } catch {
      return error(res, 400, 'bad_request', 'body is not JSON');
    }
    const ok =
      event && typeof event.type === 'string' && typeof event.room === 'string' &&
      ROOM.test(event.room) && event.payload && typeof event.payload === 'object' &&
      !Array.isArray(event.payload);
    if (!ok) return error(res, 422, 'invalid_message', 'needs room, type and an object payload');
    reply(res, 202, publish(event));
  });
});
server.keepAliveTimeout = 60_000;

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_BODY_BYTES });

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://peer');
  const names = (url.searchParams.get('rooms') || '').split(',').filter(Boolean);
  if (url.pathname !== '/ws' || !names.every((n) => ROOM.test(n))) {
    socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    return;
  }
  socket.setNoDelay(true);
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.send(
      JSON.stringify(
        envelope('welcome', {
          connection_id: randomUUID(),
          epoch,
          protocol: 'wshub.json',
          user: null,
          rooms: names,
          heartbeat_interval_ms: 30000,
          heartbeat_timeout_ms: 60000,
          max_message_bytes: MAX_BODY_BYTES,
        }),
      ),
    );
    for (const name of names) room(name).members.add(ws);
    ws.on('close', () => {
      for (const name of names) rooms.get(name)?.members.delete(ws);
    });
    // A broken socket is closed by ws; nothing else to do.
    ws.on('error', () => {});
  });
});

// wshub's backlog (Node's default is 511), so a burst of connects is not dropped.
server.listen({ port, host, backlog: 4096 }, () => {
  const addr = `${host}:${server.address().port}`;
  process.stdout.write(`${JSON.stringify({ event: 'listening', addr, epoch })}\n`);
});
