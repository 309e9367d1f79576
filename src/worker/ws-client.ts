/**
 * The worker's WebSocket client (RFC 6455, client side, no extensions or subprotocols): what the
 * worker asks of `ws`, in one module over node:http. `ws` loads its server, its stream adapter and
 * permessage-deflate (zlib) for any use: ~4 MB of an idle worker (52.4 against 48.1 MB, bundled
 * build, BENCHMARKS.md); the worker needs none of them. Behaves as `ws`'s client does for what the worker uses: the same events ('open',
 * 'message' with a Buffer, 'unexpected-response', 'error', 'close' with the code and a reason
 * Buffer), the same close codes for a broken frame (1002), bad UTF-8 (1007) or an oversized
 * message (1009), pings answered. test/unit/ws-client.test.ts runs it against a `ws` server.
 */
import { isUtf8 } from 'node:buffer';
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { EventEmitter } from 'node:events';
import http from 'node:http';
import { createRequire } from 'node:module';
import { isIP, type LookupFunction, type Socket } from 'node:net';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** How long a close handshake may take before the connection is cut. */
const CLOSE_TIMEOUT_MS = 30_000;

const Op = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const;

/** A frame the server should not have sent: the close code that says why. */
class ProtocolError extends Error {
  constructor(message: string, readonly closeCode: number) {
    super(message);
  }
}

/** Close codes a peer may send (RFC 6455 7.4, and the registered 1012-1014). */
function validCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999);
}

/** A client frame: FIN set, masked with a fresh key. */
function frame(opcode: number, payload: Buffer): Buffer {
  const length = payload.length;
  const header = length < 126 ? 2 : length < 65_536 ? 4 : 10;
  const out = Buffer.allocUnsafe(header + 4 + length);
  out[0] = 0x80 | opcode;
  if (length < 126) out[1] = 0x80 | length;
  else if (length < 65_536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(length, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeBigUInt64BE(BigInt(length), 2);
  }
  const mask = out.subarray(header, header + 4);
  randomFillSync(mask);
  for (let i = 0; i < length; i += 1) out[header + 4 + i] = payload[i]! ^ mask[i & 3]!;
  return out;
}

/** A lookup that answers every name with `address` (in the form net asks for: one, or all). */
function fixedLookup(address: string): LookupFunction {
  const family = isIP(address);
  if (family === 0) throw new SyntaxError(`not an IP address: ${address}`);
  return ((_hostname: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) => {
    if (options?.all) callback(null, [{ address, family }]);
    else callback(null, address, family);
  }) as LookupFunction;
}

export interface WsClientOptions {
  headers?: Record<string, string>;
  /** The largest message taken (bytes); a larger one closes the connection with 1009. */
  maxPayload?: number;
  /** PEM CA certificates a wss:// server's certificate must chain to (default: Node's trust store). */
  ca?: string;
  /**
   * Connect to this IP address instead of resolving the URL's host (one of a name's several
   * addresses, tried in turn): the Host header, TLS SNI and the certificate check keep the name.
   */
  address?: string;
}

export class WsClient extends EventEmitter {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;

  readyState: number = WsClient.CONNECTING;
  private readonly request: http.ClientRequest;
  private socket: Socket | undefined;
  private readonly maxPayload: number;
  /** Bytes received and not yet parsed, as they came (joined only frame by frame). */
  private chunks: Buffer[] = [];
  private bufferedBytes = 0;
  /** The fragments of a message in progress, and its opcode. */
  private fragments: Buffer[] = [];
  private fragmentBytes = 0;
  private messageOpcode = 0;
  private closeSent = false;
  private closeReceived = false;
  private closeCode = 1006;
  private closeReason = Buffer.alloc(0);
  private closeTimer: NodeJS.Timeout | undefined;
  /** The handshake failed or was given up: 'error' and 'close' are said (once). */
  private aborted = false;

  constructor(address: string | URL, options: WsClientOptions = {}) {
    super();
    const url = new URL(address);
    if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new SyntaxError(`not a WebSocket URL: ${url.href}`);
    this.maxPayload = options.maxPayload ?? 100 * 1024 * 1024;
    const key = randomBytes(16).toString('base64');
    const requestOptions: http.RequestOptions = {
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port || (url.protocol === 'wss:' ? 443 : 80),
      path: url.pathname + url.search,
      headers: { ...options.headers, Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': key },
      // The name stays the host (Host header, SNI, certificate check); only its lookup is answered here.
      ...(options.address === undefined ? {} : { lookup: fixedLookup(options.address) }),
    };
    // TLS only for a wss:// server: an http one never loads it.
    this.request = url.protocol === 'wss:' ? this.httpsRequest({ ...requestOptions, ...(options.ca === undefined ? {} : { ca: options.ca }) }) : http.request(requestOptions);
    this.request.on('upgrade', (response: http.IncomingMessage, socket: Socket, head: Buffer) => this.opened(response, socket, head, key));
    this.request.on('response', (response) => {
      if (this.listenerCount('unexpected-response') > 0) this.emit('unexpected-response', this.request, response);
      else this.abort(new Error(`Unexpected server response: ${response.statusCode}`));
    });
    this.request.on('error', (err) => this.abort(err));
    this.request.end();
  }

  private httpsRequest(options: http.RequestOptions & { ca?: string }): http.ClientRequest {
    // Required here, not imported: only a wss:// server needs TLS.
    const https = createRequire(import.meta.url)('node:https') as typeof import('node:https');
    return https.request(options);
  }

  /** Sends a text message (only while open). */
  send(text: string): void {
    if (this.readyState !== WsClient.OPEN) throw new Error('WebSocket is not open');
    this.socket!.write(frame(Op.text, Buffer.from(text, 'utf8')));
  }

  /** Starts the closing handshake (or gives up connecting). */
  close(code?: number, reason = ''): void {
    if (this.readyState === WsClient.CLOSED) return;
    if (!this.socket || this.aborted) return this.abort(new Error('WebSocket was closed before the connection was established'));
    this.readyState = WsClient.CLOSING;
    this.sendClose(code, reason);
    if (this.closeReceived) this.socket!.end();
    this.closeTimer ??= setTimeout(() => this.socket!.destroy(), CLOSE_TIMEOUT_MS);
  }

  /** Cuts the connection at once. */
  terminate(): void {
    if (this.readyState === WsClient.CLOSED) return;
    if (!this.socket || this.aborted) return this.abort(new Error('WebSocket was closed before the connection was established'));
    this.readyState = WsClient.CLOSING;
    this.socket!.destroy();
  }

  /** The handshake failed: 'error', then 'close' with 1006. */
  private abort(err: Error): void {
    // Once: the agent may close() and terminate() the same failed connection.
    if (this.aborted || this.readyState === WsClient.CLOSED) return;
    this.aborted = true;
    this.readyState = WsClient.CLOSING;
    this.request.destroy();
    this.socket?.destroy();
    // Said on the next tick, as ws does: a caller of close() or terminate() sees its own call return first.
    process.nextTick(() => {
      this.emit('error', err);
      this.readyState = WsClient.CLOSED;
      this.emit('close', 1006, Buffer.alloc(0));
    });
  }

  private opened(response: http.IncomingMessage, socket: Socket, head: Buffer, key: string): void {
    if (this.readyState !== WsClient.CONNECTING) return void socket.destroy();
    const accept = createHash('sha1').update(key + GUID).digest('base64');
    let problem: string | undefined;
    if (String(response.headers.upgrade).toLowerCase() !== 'websocket') problem = 'Invalid Upgrade header';
    else if (response.headers['sec-websocket-accept'] !== accept) problem = 'Invalid Sec-WebSocket-Accept header';
    else if (response.headers['sec-websocket-protocol'] !== undefined) problem = 'Server sent a subprotocol but none was requested';
    else if (response.headers['sec-websocket-extensions'] !== undefined) problem = 'Server sent a Sec-WebSocket-Extensions header but no extension was requested';
    if (problem) {
      this.socket = socket;
      return this.abort(new Error(problem));
    }
    this.socket = socket;
    socket.setTimeout(0);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.received(chunk));
    socket.on('end', () => {
      this.readyState = WsClient.CLOSING;
      socket.end();
    });
    // A socket error is said by the close that follows (1006), as with ws.
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      clearTimeout(this.closeTimer);
      this.readyState = WsClient.CLOSED;
      this.emit('close', this.closeCode, this.closeReason);
    });
    this.readyState = WsClient.OPEN;
    this.emit('open');
    if (head.length > 0) this.received(head);
  }

  /** The first `n` received bytes (taken off the buffer with `take`), joining only the chunks they span. */
  private peek(n: number, take = false): Buffer {
    if (this.chunks[0]!.length < n) {
      let count = 0;
      for (let have = 0; have < n; count += 1) have += this.chunks[count]!.length;
      this.chunks.splice(0, count, Buffer.concat(this.chunks.slice(0, count)));
    }
    const out = this.chunks[0]!.subarray(0, n);
    if (take) {
      this.chunks[0] = this.chunks[0]!.subarray(n);
      if (this.chunks[0].length === 0) this.chunks.shift();
      this.bufferedBytes -= n;
    }
    return out;
  }

  private received(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bufferedBytes += chunk.length;
    try {
      // Nothing after the server's close frame is read.
      while (this.socket && !this.socket.destroyed && !this.closeReceived && this.parseFrame());
    } catch (raw) {
      if (!(raw instanceof ProtocolError)) throw raw;
      // As ws: say it, and cut the connection; 'close' carries the code.
      this.closeCode = raw.closeCode;
      this.readyState = WsClient.CLOSING;
      this.emit('error', raw);
      this.socket?.destroy();
    }
  }

  /** Takes one whole frame off the buffer, if there is one; false when more bytes are needed. */
  private parseFrame(): boolean {
    if (this.bufferedBytes < 2) return false;
    const b = this.peek(Math.min(this.bufferedBytes, 10));
    const fin = (b[0]! & 0x80) !== 0;
    const opcode = b[0]! & 0x0f;
    if ((b[0]! & 0x70) !== 0) throw new ProtocolError('RSV bits set without an extension', 1002);
    if ((b[1]! & 0x80) !== 0) throw new ProtocolError('a server frame must not be masked', 1002);
    let length = b[1]! & 0x7f;
    let offset = 2;
    if (length === 126) {
      if (b.length < 4) return false;
      length = b.readUInt16BE(2);
      offset = 4;
    } else if (length === 127) {
      if (b.length < 10) return false;
      const big = b.readBigUInt64BE(2);
      if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError('frame length too large', 1009);
      length = Number(big);
      offset = 10;
    }
    const control = opcode >= 8;
    if (control) {
      if (opcode !== Op.close && opcode !== Op.ping && opcode !== Op.pong) throw new ProtocolError(`invalid opcode ${opcode}`, 1002);
      if (!fin) throw new ProtocolError('a control frame must not be fragmented', 1002);
      if (length > 125) throw new ProtocolError('a control frame is at most 125 bytes', 1002);
    } else {
      if (opcode !== Op.continuation && opcode !== Op.text && opcode !== Op.binary) throw new ProtocolError(`invalid opcode ${opcode}`, 1002);
      if (opcode === Op.continuation && this.fragments.length === 0 && this.messageOpcode === 0) throw new ProtocolError('a continuation frame with no message to continue', 1002);
      if (opcode !== Op.continuation && this.messageOpcode !== 0) throw new ProtocolError('a new message before the last one ended', 1002);
      if (this.fragmentBytes + length > this.maxPayload) throw new ProtocolError('message too big', 1009);
    }
    if (this.bufferedBytes < offset + length) return false;
    this.peek(offset, true);
    const payload = length === 0 ? Buffer.alloc(0) : this.peek(length, true);
    if (control) this.control(opcode, payload);
    else this.data(opcode, fin, payload);
    return true;
  }

  private data(opcode: number, fin: boolean, payload: Buffer): void {
    if (opcode !== Op.continuation) this.messageOpcode = opcode;
    this.fragments.push(payload);
    this.fragmentBytes += payload.length;
    if (!fin) return;
    const message = this.fragments.length === 1 ? this.fragments[0]! : Buffer.concat(this.fragments);
    const text = this.messageOpcode === Op.text;
    this.fragments = [];
    this.fragmentBytes = 0;
    this.messageOpcode = 0;
    if (text && !isUtf8(message)) throw new ProtocolError('a text message that is not UTF-8', 1007);
    // Copied: the receive buffer it points into is reused.
    this.emit('message', Buffer.from(message), !text);
  }

  private control(opcode: number, payload: Buffer): void {
    if (opcode === Op.ping) {
      if (this.readyState === WsClient.OPEN) this.socket!.write(frame(Op.pong, payload));
      return;
    }
    if (opcode === Op.pong) return;
    // Close: its code (1005 when it has none) and reason, then the reply.
    if (payload.length === 1) throw new ProtocolError('a close frame of one byte', 1002);
    let code = 1005;
    let reason = Buffer.alloc(0);
    if (payload.length >= 2) {
      code = payload.readUInt16BE(0);
      if (!validCloseCode(code)) throw new ProtocolError(`invalid close code ${code}`, 1002);
      reason = Buffer.from(payload.subarray(2));
      if (!isUtf8(reason)) throw new ProtocolError('a close reason that is not UTF-8', 1007);
    }
    this.closeReceived = true;
    this.closeCode = code;
    this.closeReason = reason;
    if (code === 1005) this.close();
    else this.close(code, reason.toString('utf8'));
  }

  private sendClose(code: number | undefined, reason: string): void {
    if (this.closeSent) return;
    this.closeSent = true;
    let payload = Buffer.alloc(0);
    if (code !== undefined) {
      const text = Buffer.from(reason, 'utf8');
      payload = Buffer.allocUnsafe(2 + text.length);
      payload.writeUInt16BE(code, 0);
      text.copy(payload, 2);
    }
    this.socket!.write(frame(Op.close, payload));
  }
}
