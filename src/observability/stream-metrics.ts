/**
 * Metrics of the TCP (L4) proxies (`streams`), in the balancer's registry next to the HTTP
 * ones. Like those, a finished session only increments plain numbers in cells resolved once
 * per config (StreamRouteMetrics on the route): no label lookups per connection.
 *
 * - `sessionlb_stream_sessions_total{listen,upstream,status}`: finished sessions by nginx
 *   stream `$status` (200 = passed, 502 = no server could be connected).
 * - `sessionlb_stream_bytes_total{listen,direction}`: bytes from clients (`received`, nginx
 *   `$bytes_received`) and to clients (`sent`, `$bytes_sent`), counted when a session ends.
 * - `sessionlb_stream_active_sessions{listen}`: open sessions now.
 * - `sessionlb_stream_preread_total{listen,result}`: ClientHellos read by streams with `route`
 *   (PREREAD_RESULTS), counted when the hello decided the connection's way.
 * Upstream servers' gauges and failures (`sessionlb_upstream_active_connections`,
 * `sessionlb_upstream_failures_total{reason}`) count stream connections too.
 */
import { Gauge, type Metric, type Registry } from 'prom-client';
import { CounterFamily, type CounterCell } from './metrics.js';

/** Cells of one (listen address, upstream) pair. */
export class StreamRouteMetrics {
  constructor(
    private readonly ok: CounterCell,
    private readonly badGateway: CounterCell,
    private readonly received: CounterCell,
    private readonly sent: CounterCell,
  ) {}

  /** One session is over; `status` is 200 or 502, the only ones a TcpSession ends with. */
  done(status: 200 | 502, bytesReceived: number, bytesSent: number): void {
    if (status === 200) this.ok.value++;
    else this.badGateway.value++;
    this.received.value += bytesReceived;
    this.sent.value += bytesSent;
  }
}

/** How reading a routed stream's ClientHello ended (the `result` label). */
export const PREREAD_RESULTS = ['matched', 'default', 'not_tls', 'malformed', 'too_large', 'timeout', 'client_closed'] as const;
export type PrereadResult = typeof PREREAD_RESULTS[number];
/** One cell per result, of one listen address. */
export type PrereadCells = Record<PrereadResult, CounterCell>;

export class StreamMetrics {
  readonly sessions = new CounterFamily('sessionlb_stream_sessions_total',
    'Finished TCP sessions of `streams` by listen address, upstream and status (nginx stream $status: 200 passed, 502 no server could be connected)',
    ['listen', 'upstream', 'status']);
  readonly bytes = new CounterFamily('sessionlb_stream_bytes_total',
    'Bytes passed by `streams`, by listen address and direction: "received" from clients, "sent" to clients (nginx $bytes_received, $bytes_sent)',
    ['listen', 'direction']);
  readonly preread = new CounterFamily('sessionlb_stream_preread_total',
    'ClientHellos read by `streams` with a `route`, by listen address and result: matched (a map key), default (TLS, no key matched), not_tls, malformed, too_large (over prereadBufferSize), timeout (prereadTimeout), client_closed',
    ['listen', 'result']);

  constructor(registry: Registry, active: () => Iterable<[string, number]>) {
    // prom-client's Registry takes any object with name/get(); its type only lists its own classes.
    registry.registerMetric(this.sessions as unknown as Metric);
    registry.registerMetric(this.bytes as unknown as Metric);
    registry.registerMetric(this.preread as unknown as Metric);
    new Gauge({
      name: 'sessionlb_stream_active_sessions', help: 'Open TCP sessions of `streams`, by listen address',
      labelNames: ['listen'], registers: [registry],
      collect(): void {
        this.reset();
        for (const [listen, n] of active()) this.set({ listen }, n);
      },
    });
  }

  /** Cells for sessions on `listen` going to `upstream` (call once per config). */
  route(listen: string, upstream: string): StreamRouteMetrics {
    return new StreamRouteMetrics(
      this.sessions.cell(listen, upstream, '200'),
      this.sessions.cell(listen, upstream, '502'),
      this.bytes.cell(listen, 'received'),
      this.bytes.cell(listen, 'sent'),
    );
  }

  /** Cells of the ClientHello results on `listen` (call once per config, for a routed stream). */
  prereadCells(listen: string): PrereadCells {
    const out = {} as PrereadCells;
    for (const r of PREREAD_RESULTS) out[r] = this.preread.cell(listen, r);
    return out;
  }
}
