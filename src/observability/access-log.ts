/**
 * The access log: one JSON object per request, with nginx's variable names so tools
 * built for nginx JSON logs map it directly. pino writes it asynchronously (sonic-boom
 * with `sync: false`: the request path only appends to a buffer) to stdout or to
 * `accessLog.path`. With `--pretty` (and in the demo) pino-pretty prints one readable
 * line per request instead, like nginx's "combined" format.
 */
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { pino, type Logger } from 'pino';
import type { RouteMetrics } from './metrics.js';
import { requestClientAddress } from '../net/client-address.js';

/** The `accessLog` config, normalised: `path` null = stdout. */
export interface AccessLogConfig {
  path: string | null;
}

export interface AccessLogOptions {
  /** Human-readable lines (pino-pretty) instead of JSON. */
  pretty?: boolean;
}

/**
 * What the proxy records of one HTTP request for the access log and metrics, filled as the
 * request goes (proxy/http/forward.ts's ForwardRecord adds the full route).
 */
export interface RequestRecord {
  readonly route: { readonly upstream: { readonly name: string }; readonly metrics?: RouteMetrics };
  upstreamAddrs: string[];
  /** Every attempt's status (502 for an attempt that failed without a response). */
  upstreamStatuses: number[];
  /** Every attempt's response time in seconds (formatted only by the access log). */
  upstreamTimes: number[];
  /** Final status as logged: the response's, or 499 when the client left before it started. Set when done. */
  status: number;
  /** Response body bytes sent to the client (nginx body_bytes_sent). */
  bodyBytes: number;
  /** performance.now() when the request arrived. */
  startedAt: number;
  /** Session affinity outcome for the access log: `bound`, `learned`, `rebound:<reason>` or `none`. */
  sticky: string;
}

/** One access log line of a TCP session (`streams`), with nginx stream's variable names. */
export interface StreamLogEntry {
  remote_addr: string;
  remote_port: number;
  /** The listen address that took the connection. */
  server_addr: string;
  server_port: number;
  protocol: 'TCP';
  /** 200 passed, 502 no server could be connected (nginx stream $status). */
  status: number;
  /** Bytes sent to / received from the client. */
  bytes_sent: number;
  bytes_received: number;
  /** Seconds, millisecond resolution (nginx $session_time). */
  session_time: number;
  /** Every server tried, `"a, b"` like nginx; "" when none was. */
  upstream_addr: string;
  upstream_bytes_sent: number;
  upstream_bytes_received: number;
  /** Per attempt, seconds; "-" for an attempt that did not connect (nginx $upstream_connect_time). */
  upstream_connect_time: string;
  upstream_name: string;
  /** Source affinity (`sticky` "source"): `bound`, `learned`, `rebound:<reason>` or `none`, as for HTTP. */
  sticky: string;
  /** Streams with `route` only: the ClientHello's server name, "" when none (nginx $ssl_preread_server_name). */
  ssl_preread_server_name?: string;
  /** Streams with `route` only: the ALPN protocols offered, comma-separated, "" when none (nginx $ssl_preread_alpn_protocols). */
  ssl_preread_alpn_protocols?: string;
}

const PRETTY_FORMAT = '{remote_addr} "{request_method} {request_uri} {server_protocol}" {status} {body_bytes_sent} {request_time}s'
  + ' upstream={upstream_name} addr="{upstream_addr}" status="{upstream_status}" time="{upstream_response_time}" sticky={sticky}';

// pino writes "{" + level + time + fields. With the level formatted away, the time must not
// start with the usual comma; the access-log tests parse every line, so a change in pino shows.
// Many requests end in the same millisecond: format the time once per millisecond.
let lastMs = 0;
let lastTime = '';
const isoTime = (): string => {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastTime = `"time":"${new Date(now).toISOString()}"`;
  }
  return lastTime;
};

/**
 * Collects the lines of one event-loop turn and hands them to sonic-boom as one write.
 * (sonic-boom measures its whole pending buffer on every write, so many small writes
 * cost O(n^2) per batch; one write per turn keeps a log line well under a microsecond.)
 */
class Batcher {
  private pending = '';
  private scheduled = false;
  constructor(private readonly target: { write(chunk: string): boolean }) {}

  write(line: string): boolean {
    this.pending += line;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    } else if (this.pending.length > 256 * 1024) {
      this.flush();
    }
    return true;
  }

  readonly flush = (): void => {
    this.scheduled = false;
    if (this.pending.length === 0) return;
    const chunk = this.pending;
    this.pending = '';
    this.target.write(chunk);
  };
}
const noLevel = (): Record<string, never> => ({});

export class AccessLog {
  private readonly logger: Logger;
  /** sonic-boom (JSON) or pino's transport thread stream (pretty): both are event emitters with end(). */
  private readonly stream: { end(): void; once(event: string, listener: () => void): unknown };
  /** sonic-boom's reopen (JSON to a file): after logrotate moved the file, like `nginx -s reopen`. */
  private readonly reopenFile: (() => void) | null = null;
  private readonly batcher: Batcher | null = null;

  constructor(readonly config: AccessLogConfig, readonly options: AccessLogOptions = {}) {
    if (options.pretty) {
      const stream = pino.transport({
        target: 'pino-pretty',
        options: {
          destination: config.path ?? 1,
          mkdir: true,
          colorize: config.path === null && process.stdout.isTTY === true,
          translateTime: 'SYS:HH:MM:ss.l',
          messageFormat: PRETTY_FORMAT,
          hideObject: true,
          ignore: 'pid,hostname',
        },
      });
      this.stream = stream;
      this.logger = pino({ base: undefined }, stream);
    } else {
      const stream = pino.destination({ dest: config.path ?? 1, sync: false, mkdir: true });
      const batcher = new Batcher(stream);
      this.batcher = batcher;
      this.stream = stream;
      if (config.path !== null) {
        this.reopenFile = () => {
          batcher.flush();
          stream.reopen();
        };
      }
      this.logger = pino({ base: undefined, timestamp: isoTime, formatters: { level: noLevel } }, batcher);
    }
  }

  /**
   * Logs one finished request. `record` is null for requests answered without an upstream
   * (no matching location); `seconds` is the whole request time.
   */
  write(req: IncomingMessage, status: number, bodyBytes: number, seconds: number, upstreamName: string, record: RequestRecord | null): void {
    const headers = req.headers;
    const tls = req.socket as TLSSocket;
    const encrypted = tls.encrypted === true;
    this.logger.info({
      remote_addr: requestClientAddress(req),
      request_method: req.method ?? '',
      request_uri: req.url ?? '',
      server_protocol: `HTTP/${req.httpVersion}`,
      status,
      body_bytes_sent: bodyBytes,
      http_referer: headers.referer ?? '',
      http_user_agent: headers['user-agent'] ?? '',
      request_time: Math.round(seconds * 1000) / 1000,
      upstream_addr: record === null ? '' : record.upstreamAddrs.join(', '),
      upstream_status: record === null ? '' : record.upstreamStatuses.join(', '),
      upstream_response_time: record === null ? '' : formatTimes(record.upstreamTimes),
      upstream_name: upstreamName,
      sticky: record?.sticky ?? 'none',
      // nginx $ssl_protocol, $ssl_cipher, $ssl_session_reused ("r" or "."): "" on plain HTTP.
      ssl_protocol: encrypted ? tls.getProtocol() ?? '' : '',
      ssl_cipher: encrypted ? tls.getCipher()?.name ?? '' : '',
      ssl_session_reused: encrypted ? (tls.isSessionReused() ? 'r' : '.') : '',
    });
  }

  /** Logs one finished TCP session of a stream (fields named after nginx stream's log variables). */
  writeStream(entry: StreamLogEntry): void {
    this.logger.info(entry);
  }

  /** Reopens the log file (SIGUSR1, after log rotation); false when there is none to reopen. */
  reopen(): boolean {
    if (this.reopenFile === null) return false;
    this.reopenFile();
    return true;
  }

  /** Writes out what is buffered and closes the file (stdout stays open). */
  close(): Promise<void> {
    return new Promise((resolve) => {
      const stream = this.stream;
      let settled = false;
      const done = (): void => {
        if (!settled) {
          settled = true;
          resolve();
        }
      };
      stream.once('close', done);
      stream.once('finish', done);
      stream.once('error', done);
      setTimeout(done, 2000).unref();
      this.batcher?.flush();
      stream.end();
    });
  }
}

/**
 * nginx $upstream_response_time / $upstream_connect_time: seconds with millisecond resolution,
 * `"0.001, 0.002"` after retries; a negative time (no connection was made) is written `-`.
 */
export function formatTimes(seconds: readonly number[]): string {
  if (seconds.length === 1) return formatTime(seconds[0]!);
  return seconds.map(formatTime).join(', ');
}

function formatTime(t: number): string {
  return t < 0 ? '-' : t.toFixed(3);
}
