/**
 * `--metrics-listen HOST:PORT`: /metrics on a listener of its own, plain HTTP and open (no token),
 * for a Prometheus on a private network; the main listener (and its token) stays as it is.
 */
import http from 'node:http';
import type { Logger } from 'pino';
import { coerceError } from '../../errors.js';
import type { KilnMetrics } from './kiln-metrics.js';

/** A metrics listener: its URL, and how to close it. */
export interface MetricsListener {
  url: string;
  close(): Promise<void>;
}

/** Listens on `host:port` (0: a free port); rejects with the listen error (EADDRINUSE...). */
export async function listenForMetrics(log: Logger, metrics: KilnMetrics, host: string, port: number): Promise<MetricsListener> {
  const server = http.createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (path !== '/metrics' || (request.method !== 'GET' && request.method !== 'HEAD')) {
      response.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: metrics are at GET /metrics\n');
      return;
    }
    metrics.render().then(
      ({ contentType, body }) => response.writeHead(200, { 'content-type': contentType }).end(request.method === 'HEAD' ? undefined : body),
      (raw) => {
        log.error({ err: coerceError(raw) }, 'metrics could not be read');
        response.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end('metrics could not be read (see the server log)\n');
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const bound = typeof address === 'object' && address ? address.port : port;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${bound}/metrics`,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
