// A TCP proxy the tests control, to cut a browser's connection to the hub
// the way a network does (no close frame), to refuse reconnects for a while,
// and to break WebSocket upgrades while plain HTTP passes (as some proxies do).

import net from 'node:net';

export class Proxy {
  /**
   * Listens on a free loopback port and forwards every connection to `target`.
   * @param {number} targetPort
   */
  static async start(targetPort) {
    const proxy = new Proxy(targetPort);
    await new Promise((resolve, reject) => {
      proxy.server.once('error', reject);
      proxy.server.listen(0, '127.0.0.1', resolve);
    });
    proxy.port = proxy.server.address().port;
    return proxy;
  }

  constructor(targetPort) {
    this.targetPort = targetPort;
    /** When true, new connections are accepted and destroyed at once. */
    this.refusing = false;
    /** When true, a connection whose request asks for an upgrade is answered 502. */
    this.breakUpgrades = false;
    this.brokenUpgrades = 0;
    this.accepted = 0;
    this.refused = 0;
    /** @type {Set<net.Socket>} */
    this.sockets = new Set();
    /** @type {Set<[net.Socket, net.Socket]>} connections still forwarding */
    this.pairs = new Set();
    this.server = net.createServer((client) => this.#forward(client));
  }

  #forward(client) {
    if (this.refusing) {
      this.refused += 1;
      client.destroy();
      return;
    }
    if (this.breakUpgrades) {
      // Decide on the first bytes of the request head (small enough to come whole).
      client.once('data', (head) => {
        if (/^upgrade:\s*websocket/im.test(head.toString('latin1'))) {
          this.brokenUpgrades += 1;
          client.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
          return;
        }
        client.pause();
        client.unshift(head);
        this.#pipe(client);
      });
      client.on('error', () => {});
      return;
    }
    this.#pipe(client);
  }

  #pipe(client) {
    this.accepted += 1;
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => {}); // a cut is the point here; 'close' follows
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    const pair = [client, upstream];
    this.pairs.add(pair);
    client.on('close', () => this.pairs.delete(pair));
  }

  /** Stops forwarding on every current connection without closing any: a silent peer. */
  freeze() {
    for (const [client, upstream] of this.pairs) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
    }
    this.pairs.clear();
  }

  /**
   * Closes every proxied socket on both sides, with no WebSocket close frame.
   * (Not `resetAndDestroy()`: on Node 20 it can leave a handle that keeps the
   * process spinning at exit.)
   */
  cut() {
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  async close() {
    this.refusing = true;
    this.cut();
    await new Promise((resolve) => this.server.close(() => resolve()));
  }
}
