/**
 * Binds a listener the way nginx does: "[::]:port" with ipv6only=on, so "0.0.0.0:port" and
 * "[::]:port" can both be listed. Resolves once bound; rejects with the bind error (EADDRINUSE, ...).
 */
import type { Server } from 'node:net';

export function listenOn(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, ipv6Only: host.includes(':') }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
