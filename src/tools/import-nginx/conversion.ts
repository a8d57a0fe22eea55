/**
 * One conversion in progress: what has been collected (upstreams, servers, streams, the locations
 * that use each upstream) and what has been said (warnings, notes, errors). The converter's
 * block handlers (converter.ts, upstream-block.ts, server-block.ts, location-block.ts,
 * stream-block.ts, ...) all work on one Conversion.
 */
import type {
  RawConfig, RawLocation, RawStream, RawUpstream, RawUpstreamServer, RawVirtualServer,
} from '../../config/schema.js';
import { dirname, resolve } from 'node:path';
import type { NginxDirective } from './tokenizer.js';
import { decodeLine, fileAndLine, type ImportDiagnostic } from './diagnostics.js';
import { nginxSize } from './values.js';

/** A value from a directive, with the line it was written on. */
export interface Sourced<T> {
  value: T;
  line: number;
}

/** The proxy_* settings nginx inherits http -> server -> location (each level may override). */
export interface ProxyScope {
  /** nginx: a level that has any proxy_set_header replaces the whole inherited list. */
  setHeaders?: Sourced<Array<[string, string, number]>>;
  nextUpstream?: Sourced<string[]>;
  tries?: Sourced<number>;
  nextTimeout?: Sourced<string>;
  connect?: Sourced<string>;
  send?: Sourced<string>;
  read?: Sourced<string>;
}

export type Mutable<T> = { -readonly [K in keyof T]: T[K] };
export type Upstream = Mutable<RawUpstream> & { servers: RawUpstreamServer[] };
export type Location = Mutable<RawLocation>;
export type HealthCheck = NonNullable<RawUpstream['healthCheck']>;

/** One location's use of an upstream: what it would configure there. */
export interface Usage {
  target: string;
  /** The location object in the output (its proxyPass may be rewritten). */
  location: Location;
  uri: string;
  /** "server www.example.com, location /upload (line 20)" */
  where: string;
  line: number;
  scope: ProxyScope;
  healthCheck: Sourced<HealthCheck> | null;
  /** The target is `host:port`, not a named upstream. */
  isAddress: boolean;
  /** proxy_pass http:// or https://. */
  scheme: 'http' | 'https';
  /**
   * An https address target with no proxy_ssl_name at any level: the host nginx verifies and
   * sends ($proxy_host), to be written as proxySslName if the address becomes a named upstream.
   */
  tlsHost: string | null;
}

export class Conversion {
  readonly warnings: ImportDiagnostic[] = [];
  readonly notes: ImportDiagnostic[] = [];
  readonly errors: ImportDiagnostic[] = [];
  readonly upstreams = new Map<string, Upstream>();
  readonly upstreamLines = new Map<string, number>();
  readonly usages: Usage[] = [];
  readonly top: Mutable<RawConfig> & { servers: RawVirtualServer[] } = { servers: [] };
  hostNoteGiven = false;
  readonly headerWarned = new Set<number>();
  /** Directives (by line) already warned about once, when several servers inherit them. */
  readonly inheritedWarned = new Set<number>();
  readonly streams: RawStream[] = [];
  /** limit_req_zone / limit_conn_zone of http by name (limit-settings.ts), read before any limit_req. */
  readonly limitReqZones = new Map<string, Sourced<{ key: string; rate: string; size: string }>>();
  readonly limitConnZones = new Map<string, Sourced<{ key: string; size: string }>>();
  /** Page files (error_page) written that are not on this machine: the CLI writes the result anyway. */
  readonly missingFiles = new Set<string>();
  /** --allow-open: an access restriction that cannot be carried over is a warning, not an error. */
  allowOpen = false;

  /** `files`: the included files by index (index 0, the main file, is never shown). */
  constructor(private readonly files: readonly string[] = []) {}

  /** "line 12", or "conf.d/a.conf:12" for a line of an included file (see LINE_BASE). */
  at(line: number): string {
    return decodeLine(line).file === 0 ? `line ${line}` : fileAndLine(this.files, line);
  }

  /** The directory of the converted file: nginx's configuration directory, for relative paths. */
  configDir(): string {
    const main = this.files[0];
    return main === undefined ? process.cwd() : dirname(resolve(main));
  }

  warn(line: number, message: string): void {
    this.warnings.push({ line, message });
  }

  error(line: number, message: string): void {
    this.errors.push({ line, message });
  }

  unsupported(d: NginxDirective, where: string): void {
    this.warn(d.line, `"${d.name}" ${where} is not supported by sessionlb; ignored`);
  }

  oneArg(d: NginxDirective): string | null {
    if (d.args.length < 1) {
      this.error(d.line, `invalid number of arguments in "${d.name}" directive`);
      return null;
    }
    return d.args[0]!;
  }

  size(d: NginxDirective, set: (v: string) => void): void {
    const a = this.oneArg(d);
    if (a === null) return;
    const v = nginxSize(a);
    if (v === null) this.error(d.line, `"${d.name}": "${a}" is not a size such as "1m", "512k" or "0"`);
    else set(v);
  }
}
