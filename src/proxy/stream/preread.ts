/**
 * TLS passthrough routed by the ClientHello (a stream's `route`; nginx `ssl_preread on` with
 * `map $ssl_preread_server_name` or `$ssl_preread_alpn_protocols`, HAProxy `req.ssl_sni`):
 * one `StreamPreread` per routed listen address per config, holding the route of each upstream
 * it may choose (each a plain `StreamRoute`, with its own metric cells and tries) and the rules
 * that choose one from what `readClientHello` (tls/client-hello.ts) gave.
 *
 * `"by": "sni"`: the server name through nginx's name rules (`ServerNames`: exact, then the longest
 * `*.example.com` / `.example.com`, then the longest `www.example.*`; the hello's name is already
 * lower-cased without a trailing dot). `"by": "alpn"`: the client's protocols in the client's order,
 * the first one the map has wins. A TLS hello that names nothing the map has (or has no SNI/ALPN)
 * goes to `default`; a connection that is not TLS, or a malformed hello, goes to `default` with
 * `"onNonTls": "default"` (nginx: the variable is empty, so the map's default applies) or is closed
 * with `"close"`. A hello over `prereadBufferSize` and one not complete within `prereadTimeout` are
 * closed (nginx: "preread buffer full", preread timeout); so is anything that should go to
 * `default` when there is none.
 */
import type { StreamRouteConfig } from '../../config/model.js';
import { ServerNames } from '../../nginx-language/server-names.js';
import type { PrereadCells } from '../../observability/stream-metrics.js';
import type { HelloResult } from '../../tls/client-hello.js';
import type { StreamRoute } from './tcp-session.js';

export class StreamPreread {
  /** readClientHello's bounds. */
  readonly options: { readonly maxBytes: number; readonly timeoutMs: number };
  private readonly names: ServerNames<StreamRoute> | null = null;
  private readonly protocols: Map<string, StreamRoute> | null = null;
  private readonly fallback: StreamRoute | null;
  private readonly nonTlsToDefault: boolean;

  /** `routes`: upstream name -> its route, for every upstream of `config` (map values and default). */
  constructor(readonly config: StreamRouteConfig, routes: ReadonlyMap<string, StreamRoute>, private readonly cells: PrereadCells) {
    this.options = { maxBytes: config.prereadBufferSize, timeoutMs: config.prereadTimeoutMs };
    if (config.by === 'sni') {
      const names = new ServerNames<StreamRoute>();
      for (const [key, upstream] of config.map) names.add([key], routes.get(upstream)!, false);
      this.names = names;
    } else {
      this.protocols = new Map([...config.map].map(([key, upstream]) => [key, routes.get(upstream)!]));
    }
    this.fallback = config.default === null ? null : routes.get(config.default)!;
    this.nonTlsToDefault = config.onNonTls === 'default';
  }

  /** Where the connection goes (null: close it); counts the result. */
  choose(result: HelloResult): StreamRoute | null {
    const cells = this.cells;
    if (result.ok) {
      const hello = result.hello;
      let found: StreamRoute | undefined;
      if (this.names !== null) {
        if (hello.serverName !== undefined) found = this.names.match(hello.serverName);
      } else if (hello.alpn !== undefined) {
        for (const p of hello.alpn) {
          found = this.protocols!.get(p);
          if (found !== undefined) break;
        }
      }
      if (found !== undefined) {
        cells.matched.value++;
        return found;
      }
      cells.default.value++;
      return this.fallback;
    }
    switch (result.reason) {
      case 'not_tls':
      case 'malformed':
        cells[result.reason].value++;
        return this.nonTlsToDefault ? this.fallback : null;
      case 'too_large':
      case 'timeout':
        cells[result.reason].value++;
        return null;
      case 'closed':
        cells.client_closed.value++;
        return null;
    }
  }
}
