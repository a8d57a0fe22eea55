/**
 * `sessionlb import-nginx`: reads the http and stream parts of an nginx configuration (upstreams,
 * servers, locations and the proxy_* settings our users have) and produces the equivalent sessionlb
 * configuration. First a real tokenizer/parser for nginx's syntax (what `ngx_conf_read_token`
 * accepts: directives `name arg ... ;`, blocks `name arg ... { ... }`, single and double quoted
 * strings, backslash escapes, `${var}` inside words, `#` comments), then the conversion.
 *
 * `include` is followed where it stands (IncludeExpander, below), as nginx reads it.
 *
 * Nothing is dropped silently: every directive or parameter that is not converted is a warning
 * naming its file and line. proxy_next_upstream* and proxy_*_timeout are per location in nginx but per
 * upstream in sessionlb: they are moved onto the upstream the location proxies to, with a
 * warning when locations sharing an upstream disagree.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { parseHostPort, formatHostPort } from '../../nginx-language/address.js';
import { parseDuration, parseSize } from '../../nginx-language/units.js';
import {
  NEXT_UPSTREAM_CONDITIONS,
  type RawConfig, type RawLocation, type RawStream, type RawUpstream, type RawUpstreamServer, type RawVirtualServer,
} from '../../config/schema.js';
export interface NginxDirective {
  name: string;
  args: string[];
  /** 1-based line where the directive's name starts. */
  line: number;
  /** The block's contents for `name ... { }`; null for `name ... ;`. */
  block: NginxDirective[] | null;
}

export class NginxSyntaxError extends Error {
  constructor(readonly file: string, readonly line: number, readonly detail: string) {
    super(`${file}:${line}: ${detail}`);
    this.name = 'NginxSyntaxError';
  }
}

interface Token {
  kind: 'word' | ';' | '{' | '}' | 'eof';
  text: string;
  line: number;
}

function isSpace(ch: string): boolean {
  return ch === ' ' || ch === '\t' || ch === '\r' || ch === '\n';
}

/**
 * nginx's escape rules, applied to every word: `\"`, `\'` and `\\` lose the backslash, `\t`,
 * `\r`, `\n` become the control character, any other backslash is kept as written.
 */
function unescape(raw: string): string {
  if (raw.indexOf('\\') === -1) return raw;
  let out = '';
  for (let i = 0; i < raw.length; i++) {
    const ch = raw[i]!;
    if (ch === '\\' && i + 1 < raw.length) {
      const next = raw[i + 1]!;
      if (next === '"' || next === '\'' || next === '\\') { out += next; i++; continue; }
      if (next === 't') { out += '\t'; i++; continue; }
      if (next === 'r') { out += '\r'; i++; continue; }
      if (next === 'n') { out += '\n'; i++; continue; }
    }
    out += ch;
  }
  return out;
}

/** Splits nginx configuration text into words and the three punctuation tokens. */
export function tokenize(text: string, file: string): Token[] {
  const tokens: Token[] = [];
  let line = 1;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const ch = text[i]!;
    if (ch === '\n') { line++; i++; continue; }
    if (isSpace(ch)) { i++; continue; }
    if (ch === '#') {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    if (ch === ';' || ch === '{' || ch === '}') {
      tokens.push({ kind: ch, text: ch, line });
      i++;
      continue;
    }
    const startLine = line;
    if (ch === '"' || ch === '\'') {
      const quote = ch;
      i++;
      let raw = '';
      for (;;) {
        if (i >= n) throw new NginxSyntaxError(file, startLine, `unterminated ${quote === '"' ? 'double' : 'single'}-quoted string (unexpected end of file)`);
        const c = text[i]!;
        if (c === '\\' && i + 1 < n) {
          raw += c + text[i + 1]!;
          if (text[i + 1] === '\n') line++;
          i += 2;
          continue;
        }
        if (c === quote) { i++; break; }
        if (c === '\n') line++;
        raw += c;
        i++;
      }
      // nginx wants a separator right after a closing quote.
      if (i < n) {
        const after = text[i]!;
        if (!isSpace(after) && after !== ';' && after !== '{' && after !== ')') {
          throw new NginxSyntaxError(file, line, `unexpected "${after}" after a quoted string`);
        }
      }
      tokens.push({ kind: 'word', text: unescape(raw), line: startLine });
      continue;
    }
    // An unquoted word ends at whitespace, ";" or "{" (but "${" starts a variable name).
    let raw = '';
    let afterDollar = false;
    while (i < n) {
      const c = text[i]!;
      if (c === '{' && afterDollar) { raw += c; i++; afterDollar = false; continue; }
      if (isSpace(c) || c === ';' || c === '{') break;
      afterDollar = c === '$';
      if (c === '\\' && i + 1 < n) {
        if (text[i + 1] === '\n') line++;
        raw += c + text[i + 1]!;
        i += 2;
        continue;
      }
      raw += c;
      i++;
    }
    tokens.push({ kind: 'word', text: unescape(raw), line: startLine });
  }
  tokens.push({ kind: 'eof', text: '', line });
  return tokens;
}

/** Parses nginx configuration text into a tree of directives. Throws NginxSyntaxError with the line. */
export function parseNginx(text: string, file: string): NginxDirective[] {
  const tokens = tokenize(text, file);
  let pos = 0;

  const parseBlock = (depth: number, openLine: number): NginxDirective[] => {
    const out: NginxDirective[] = [];
    for (;;) {
      const t = tokens[pos]!;
      if (t.kind === 'eof') {
        if (depth > 0) throw new NginxSyntaxError(file, t.line, `unexpected end of file, expecting "}" (the block opened on line ${openLine} is not closed)`);
        return out;
      }
      if (t.kind === '}') {
        if (depth === 0) throw new NginxSyntaxError(file, t.line, 'unexpected "}"');
        pos++;
        return out;
      }
      if (t.kind === ';') throw new NginxSyntaxError(file, t.line, 'unexpected ";"');
      if (t.kind === '{') throw new NginxSyntaxError(file, t.line, 'unexpected "{" (a block needs a directive name)');
      const name = t.text;
      const line = t.line;
      pos++;
      const args: string[] = [];
      for (;;) {
        const a = tokens[pos]!;
        if (a.kind === 'word') { args.push(a.text); pos++; continue; }
        if (a.kind === ';') {
          pos++;
          out.push({ name, args, line, block: null });
          break;
        }
        if (a.kind === '{') {
          pos++;
          const block = parseBlock(depth + 1, a.line);
          out.push({ name, args, line, block });
          break;
        }
        if (a.kind === '}') throw new NginxSyntaxError(file, a.line, `unexpected "}" (directive "${name}" on line ${line} is not terminated by ";")`);
        throw new NginxSyntaxError(file, a.line, `unexpected end of file, expecting ";" or "}" (directive "${name}" on line ${line})`);
      }
    }
  };

  return parseBlock(0, 0);
}

// ---------------------------------------------------------------------------------------------
// Conversion: nginx directives -> sessionlb's JSON configuration.
// ---------------------------------------------------------------------------------------------

/** A message about one place in the nginx file. */
export interface ImportDiagnostic {
  line: number;
  message: string;
  /** The included file the line is in; absent: the file given to importNginx. */
  file?: string;
}

export interface ImportResult {
  /** The sessionlb configuration (not yet validated: pass it to `loadConfig`). */
  config: RawConfig;
  /** Directives and parameters that were not converted, and conflicts that were resolved. */
  warnings: ImportDiagnostic[];
  /** Differences in behaviour worth knowing that need no action. */
  notes: ImportDiagnostic[];
  /** What makes the result unusable (bad values, unsupported addresses); the CLI exits 1. */
  errors: ImportDiagnostic[];
}

/** Formats a diagnostic the way compilers do: `nginx.conf:12: warning: ...`. */
export function formatDiagnostic(file: string, kind: 'warning' | 'note' | 'error', d: ImportDiagnostic): string {
  return `${d.file ?? file}:${d.line}: ${kind}: ${d.message}`;
}

/** A value from a directive, with the line it was written on. */
interface Sourced<T> {
  value: T;
  line: number;
}

/** The proxy_* settings nginx inherits http -> server -> location (each level may override). */
interface ProxyScope {
  /** nginx: a level that has any proxy_set_header replaces the whole inherited list. */
  setHeaders?: Sourced<Array<[string, string, number]>>;
  nextUpstream?: Sourced<string[]>;
  tries?: Sourced<number>;
  nextTimeout?: Sourced<string>;
  connect?: Sourced<string>;
  send?: Sourced<string>;
  read?: Sourced<string>;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
type Upstream = Mutable<RawUpstream> & { servers: RawUpstreamServer[] };
type Location = Mutable<RawLocation>;
type HealthCheck = NonNullable<RawUpstream['healthCheck']>;

/** One location's use of an upstream: what it would configure there. */
interface Usage {
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
}

const NGINX_DEFAULT_NEXT_UPSTREAM = ['error', 'timeout'];
const DEFAULT_TIMEOUT = '60s';
const NEXT_UPSTREAM = new Set<string>(NEXT_UPSTREAM_CONDITIONS);

/** Directives that belong to nginx's main/events contexts: nothing for a proxy to take over. */
const MAIN_CONTEXT = new Set([
  'user', 'worker_processes', 'worker_rlimit_nofile', 'worker_cpu_affinity', 'pid', 'error_log',
  'load_module', 'daemon', 'master_process', 'env', 'pcre_jit', 'thread_pool', 'timer_resolution',
  'working_directory', 'lock_file', 'worker_priority', 'worker_shutdown_timeout', 'ssl_engine',
]);

/**
 * nginx idioms that only restate what sessionlb does by itself (`proxy_set_header Host $host`,
 * X-Forwarded-*, the websocket Connection/Upgrade pair): converting them is not needed.
 */
function headerIsDefault(name: string, value: string): boolean {
  const n = name.toLowerCase();
  const v = value.trim();
  switch (n) {
    case 'host': return v === '$host' || v === '$http_host';
    case 'x-real-ip': return v === '$remote_addr';
    case 'x-forwarded-for': return v === '$proxy_add_x_forwarded_for';
    case 'x-forwarded-proto': return v === '$scheme';
    case 'x-forwarded-host': return v === '$host' || v === '$http_host';
    // Hop-by-hop: sessionlb strips them and passes websocket upgrades on its own.
    case 'connection': return v === '' || v === 'upgrade' || v === '$connection_upgrade' || v === 'keep-alive' || v === 'close';
    case 'upgrade': return v === '$http_upgrade';
    default: return false;
  }
}

function isInt(text: string | undefined): text is string {
  return text !== undefined && /^\d+$/.test(text);
}

/** nginx allows spaces inside a time value ("1h 30m"); sessionlb's strings do not. */
function nginxDuration(text: string): string | null {
  const compact = text.replace(/\s+/g, '');
  return Number.isNaN(parseDuration(compact)) ? null : compact;
}

/** The proxy_* directives of nginx's stream module that `streams` has. */
const STREAM_PROXY_DIRECTIVES = new Set([
  'proxy_connect_timeout', 'proxy_timeout', 'proxy_next_upstream', 'proxy_next_upstream_tries', 'proxy_next_upstream_timeout', 'proxy_half_close',
]);

function nginxSize(text: string): string | null {
  return Number.isNaN(parseSize(text)) ? null : text;
}

/** Canonical text of a `host:port` target for comparisons (nginx default port 80). */
function addressKey(target: string): string | null {
  const hp = parseHostPort(target, 80);
  return typeof hp === 'string' ? null : formatHostPort(hp.host, hp.port);
}

class Converter {
  readonly warnings: ImportDiagnostic[] = [];
  readonly notes: ImportDiagnostic[] = [];
  readonly errors: ImportDiagnostic[] = [];
  private readonly upstreams = new Map<string, Upstream>();
  private readonly upstreamLines = new Map<string, number>();
  private readonly usages: Usage[] = [];
  private readonly top: Mutable<RawConfig> & { servers: RawVirtualServer[] } = { servers: [] };
  private hostNoteGiven = false;
  private readonly headerWarned = new Set<number>();

  /** `files`: the included files by index (index 0, the main file, is never shown). */
  constructor(private readonly files: readonly string[] = []) {}

  /** "line 12", or "conf.d/a.conf:12" for a line of an included file (see LINE_BASE). */
  private at(line: number): string {
    return decodeLine(line).file === 0 ? `line ${line}` : fileAndLine(this.files, line);
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

  convert(tree: NginxDirective[]): RawConfig {
    // nginx.conf has `http { ... }`; a conf.d file has its upstream/server blocks at the top.
    const http: NginxDirective[] = [];
    const streamBlocks: NginxDirective[] = [];
    for (const d of tree) {
      if (d.name === 'http' && d.block !== null) http.push(...d.block);
      else if (d.name === 'stream' && d.block !== null) streamBlocks.push(d);
      else if (d.name === 'stream') {
        this.warn(d.line, '"stream" without a block ignored: nothing to convert (nginx wants stream { server { listen ...; proxy_pass ...; } })');
      } else if (d.name === 'events' || d.name === 'mail') {
        this.warn(d.line, `"${d.name}" block ignored (sessionlb has no ${d.name === 'events' ? 'worker settings' : 'mail proxy'})`);
      } else if (MAIN_CONTEXT.has(d.name)) {
        this.warn(d.line, `"${d.name}" (nginx process setting) is not used by sessionlb; ignored`);
      } else {
        http.push(d);
      }
    }
    // Upstreams first: a location may name one defined further down.
    for (const d of http) if (d.name === 'upstream') this.upstream(d);
    const scope: ProxyScope = {};
    for (const d of http) this.proxyDirective(d, scope);
    for (const d of http) {
      if (d.name === 'upstream' || this.isProxyDirective(d)) continue;
      switch (d.name) {
        case 'server':
          this.server(d, scope);
          break;
        case 'client_max_body_size':
          this.size(d, (v) => { this.top.clientMaxBodySize = v; });
          break;
        case 'keepalive_timeout': {
          const a = this.oneArg(d);
          if (a === null) break;
          const v = nginxDuration(a);
          if (v === null) this.error(d.line, `"keepalive_timeout": "${a}" is not a time such as "75s"`);
          else this.top.keepaliveTimeout = v;
          if (d.args.length > 1) this.warn(d.line, `"keepalive_timeout": the second parameter (Keep-Alive response header) is not supported by sessionlb; ignored`);
          break;
        }
        case 'access_log':
          this.accessLog(d);
          break;
        default:
          this.unsupported(d, d.block !== null ? 'block in http' : 'in http');
      }
    }
    this.applyUsages();
    // After http: an http upstream keeps its name, a stream upstream with the same name is refused.
    for (const d of streamBlocks) this.stream(d);
    const out: Mutable<RawConfig> = this.top.servers.length === 0 && this.streams.length > 0 ? {} : { servers: this.top.servers };
    if (this.streams.length > 0) out.streams = this.streams;
    if (this.upstreams.size > 0) {
      // Keys in the order the README documents them.
      const order = ['balance', 'sticky', 'healthCheck', 'servers', 'keepalive', 'keepaliveTimeout', 'nextUpstream', 'timeouts'] as const;
      out.upstreams = Object.fromEntries([...this.upstreams].map(([name, up]) => [
        name,
        Object.fromEntries(order.filter((k) => up[k] !== undefined).map((k) => [k, up[k]])) as RawUpstream,
      ]));
    }
    if (this.top.clientMaxBodySize !== undefined) out.clientMaxBodySize = this.top.clientMaxBodySize;
    if (this.top.keepaliveTimeout !== undefined) out.keepaliveTimeout = this.top.keepaliveTimeout;
    if (this.top.accessLog !== undefined) out.accessLog = this.top.accessLog;
    return out;
  }

  // ---- stream { } (TCP proxies) ----

  private readonly streams: RawStream[] = [];

  /** nginx `stream { upstream ...; server { listen; proxy_pass; ... } }` -> `streams` and `upstreams`. */
  private stream(d: NginxDirective): void {
    const block = d.block!;
    for (const item of block) {
      if (item.name !== 'upstream') continue;
      const name = item.args[0];
      if (name !== undefined && this.upstreams.has(name)) {
        this.error(item.line, `stream upstream "${name}" has the name of the http upstream on ${this.at(this.upstreamLines.get(name)!)}: sessionlb has one set of upstream names; rename one`);
        continue;
      }
      this.upstream(item);
    }
    const defaults: Partial<Mutable<RawStream>> = {};
    for (const item of block) this.streamProxyDirective(item, defaults);
    this.notes.push({ line: d.line, message: 'sessionlb streams always pass a half-close on (nginx "proxy_half_close on"; nginx\'s default is off): the session ends when both sides have closed' });
    for (const item of block) {
      if (item.name === 'upstream' || STREAM_PROXY_DIRECTIVES.has(item.name)) continue;
      if (item.name === 'server' && item.block !== null) this.streamServer(item, defaults);
      else this.unsupported(item, 'in stream');
    }
  }

  private streamServer(d: NginxDirective, defaults: Partial<Mutable<RawStream>>): void {
    const listen: string[] = [];
    let proxyPass: string | null = null;
    const own: Partial<Mutable<RawStream>> = {};
    for (const item of d.block!) {
      if (this.streamProxyDirective(item, own)) continue;
      switch (item.name) {
        case 'listen': {
          const a = this.oneArg(item);
          if (a === null) break;
          const params = item.args.slice(1);
          if (params.includes('udp')) {
            this.error(item.line, `"listen ${item.args.join(' ')}": UDP is not supported by sessionlb (TCP only)`);
            break;
          }
          if (params.includes('ssl')) {
            this.error(item.line, `"listen ${item.args.join(' ')}": TLS termination is not supported by sessionlb's streams (proxy the TLS bytes without "ssl")`);
            break;
          }
          if (params.length > 0) this.warn(item.line, `"listen": parameters "${params.join(' ')}" are not supported by sessionlb; ignored`);
          const hp = parseHostPort(a, undefined);
          if (typeof hp === 'string') this.error(item.line, `"listen ${a}": ${hp}`);
          else listen.push(/^\d+$/.test(a) ? a : formatHostPort(hp.host, hp.port));
          break;
        }
        case 'proxy_pass': {
          const a = this.oneArg(item);
          if (a === null) break;
          if (a.includes('$')) this.error(item.line, `"proxy_pass ${a}": variables are not supported by sessionlb; name an upstream or write host:port`);
          else if (a.startsWith('unix:')) this.error(item.line, `"proxy_pass ${a}": unix sockets are not supported by sessionlb (use host:port)`);
          else proxyPass = a;
          break;
        }
        default:
          this.unsupported(item, 'in a stream server');
      }
    }
    if (listen.length === 0 || proxyPass === null) {
      this.error(d.line, `stream server without ${listen.length === 0 ? '"listen"' : '"proxy_pass"'}: not converted`);
      return;
    }
    const out: Mutable<RawStream> = { listen, proxyPass };
    for (const key of ['proxyConnectTimeout', 'proxyTimeout', 'nextUpstream', 'nextUpstreamTries', 'nextUpstreamTimeout'] as const) {
      const v = own[key] ?? defaults[key];
      // Each key keeps its own type; the loop only copies.
      if (v !== undefined) (out as Record<string, unknown>)[key] = v;
    }
    this.streams.push(out);
  }

  /** proxy_* of nginx's stream module (stream or server level); true when `d` was one. */
  private streamProxyDirective(d: NginxDirective, into: Partial<Mutable<RawStream>>): boolean {
    if (!STREAM_PROXY_DIRECTIVES.has(d.name)) return false;
    const a = this.oneArg(d);
    if (a === null) return true;
    const time = (set: (v: string) => void): void => {
      const v = nginxDuration(a);
      if (v === null) this.error(d.line, `"${d.name}": "${a}" is not a time such as "10s"`);
      else set(v);
    };
    switch (d.name) {
      case 'proxy_connect_timeout': time((v) => { into.proxyConnectTimeout = v; }); break;
      case 'proxy_timeout': time((v) => { into.proxyTimeout = v; }); break;
      case 'proxy_next_upstream_timeout': time((v) => { into.nextUpstreamTimeout = v; }); break;
      case 'proxy_next_upstream':
        if (a === 'on' || a === 'off') into.nextUpstream = a === 'on';
        else this.error(d.line, `"proxy_next_upstream": "${a}" must be "on" or "off" in a stream`);
        break;
      case 'proxy_next_upstream_tries':
        if (isInt(a)) into.nextUpstreamTries = Number(a);
        else this.error(d.line, `"proxy_next_upstream_tries": "${a}" is not a number`);
        break;
      case 'proxy_half_close':
        if (a !== 'on') this.warn(d.line, `"proxy_half_close ${a}": sessionlb always passes half-closes on (as "proxy_half_close on")`);
        break;
    }
    return true;
  }

  private oneArg(d: NginxDirective): string | null {
    if (d.args.length < 1) {
      this.error(d.line, `invalid number of arguments in "${d.name}" directive`);
      return null;
    }
    return d.args[0]!;
  }

  private size(d: NginxDirective, set: (v: string) => void): void {
    const a = this.oneArg(d);
    if (a === null) return;
    const v = nginxSize(a);
    if (v === null) this.error(d.line, `"${d.name}": "${a}" is not a size such as "1m", "512k" or "0"`);
    else set(v);
  }

  private accessLog(d: NginxDirective): void {
    const a = this.oneArg(d);
    if (a === null) return;
    if (this.top.accessLog !== undefined) {
      this.warn(d.line, '"access_log": sessionlb writes one access log; this one replaces the previous "access_log"');
    }
    if (a === 'off') {
      this.top.accessLog = false;
      return;
    }
    this.top.accessLog = { path: a };
    this.warn(d.line, `"access_log": sessionlb writes one JSON object per request to ${a}${d.args.length > 1 ? `; the format/parameters "${d.args.slice(1).join(' ')}" are ignored` : ', not nginx\'s "combined" format'}`);
  }

  // ---- proxy_* (inherited http -> server -> location) ----

  private isProxyDirective(d: NginxDirective): boolean {
    return d.block === null && (d.name === 'proxy_set_header' || d.name === 'proxy_next_upstream'
      || d.name === 'proxy_next_upstream_tries' || d.name === 'proxy_next_upstream_timeout'
      || d.name === 'proxy_connect_timeout' || d.name === 'proxy_send_timeout' || d.name === 'proxy_read_timeout'
      || d.name === 'proxy_http_version');
  }

  /** Records an inheritable proxy_* directive into `scope` (the scope of the block it is in). */
  private proxyDirective(d: NginxDirective, scope: ProxyScope): void {
    if (!this.isProxyDirective(d)) return;
    const timeout = (key: 'connect' | 'send' | 'read' | 'nextTimeout'): void => {
      const a = this.oneArg(d);
      if (a === null) return;
      const v = nginxDuration(a);
      if (v === null) this.error(d.line, `"${d.name}": "${a}" is not a time such as "500ms", "10s" or "1m"`);
      else scope[key] = { value: v, line: d.line };
    };
    switch (d.name) {
      case 'proxy_set_header': {
        if (d.args.length !== 2) {
          this.error(d.line, `invalid number of arguments in "proxy_set_header" directive (expected a name and a value)`);
          return;
        }
        // `scope` holds only this level's directives: they add up; the parent's list is replaced.
        const list = scope.setHeaders?.value ?? [];
        list.push([d.args[0]!, d.args[1]!, d.line]);
        scope.setHeaders = { value: list, line: list[0]![2] };
        return;
      }
      case 'proxy_next_upstream': {
        const on: string[] = [];
        for (const c of d.args) {
          if (NEXT_UPSTREAM.has(c)) on.push(c);
          else this.warn(d.line, `"proxy_next_upstream ${c}" is not supported by sessionlb; that condition is ignored`);
        }
        if (on.length === 0) {
          if (d.args.length === 0) this.error(d.line, 'invalid number of arguments in "proxy_next_upstream" directive');
          return;
        }
        scope.nextUpstream = { value: on, line: d.line };
        return;
      }
      case 'proxy_next_upstream_tries': {
        const a = this.oneArg(d);
        if (a === null) return;
        if (!isInt(a)) this.error(d.line, `"proxy_next_upstream_tries": "${a}" is not a number`);
        else scope.tries = { value: Number(a), line: d.line };
        return;
      }
      case 'proxy_next_upstream_timeout': timeout('nextTimeout'); return;
      case 'proxy_connect_timeout': timeout('connect'); return;
      case 'proxy_send_timeout': timeout('send'); return;
      case 'proxy_read_timeout': timeout('read'); return;
      case 'proxy_http_version':
        if (d.args[0] !== '1.1') this.warn(d.line, `"proxy_http_version ${d.args.join(' ')}": sessionlb always speaks HTTP/1.1 to upstreams; ignored`);
        return;
    }
  }

  /** The scope of a block: its parent's settings overridden by its own proxy_* directives. */
  private childScope(parent: ProxyScope, block: NginxDirective[]): ProxyScope {
    const own: ProxyScope = {};
    for (const d of block) this.proxyDirective(d, own);
    const scope: ProxyScope = { ...parent };
    for (const [k, v] of Object.entries(own) as Array<[keyof ProxyScope, Sourced<never>]>) scope[k] = v;
    return scope;
  }

  // ---- upstream { } ----

  private upstream(d: NginxDirective): void {
    if (d.block === null || d.args.length !== 1) {
      this.error(d.line, `"upstream" needs a name and a block: upstream NAME { server ADDRESS; }`);
      return;
    }
    const name = d.args[0]!;
    if (this.upstreams.has(name)) {
      this.error(d.line, `duplicate upstream "${name}" (first defined on ${this.at(this.upstreamLines.get(name)!)})`);
      return;
    }
    const up: Upstream = { servers: [] };
    let balanceLine = 0;
    const setBalance = (line: number, balance: NonNullable<RawUpstream['balance']>): void => {
      if (balanceLine !== 0) this.warn(line, `load balancing method redefined (was set on ${this.at(balanceLine)}); the last one is used, as in nginx`);
      balanceLine = line;
      up.balance = balance;
    };
    for (const item of d.block) {
      switch (item.name) {
        case 'server': {
          const s = this.upstreamServer(item);
          if (s) up.servers.push(s);
          break;
        }
        case 'keepalive': {
          const a = this.oneArg(item);
          if (a !== null && isInt(a)) up.keepalive = Number(a);
          else if (a !== null) this.error(item.line, `"keepalive": "${a}" is not a number`);
          break;
        }
        case 'keepalive_timeout': {
          const a = this.oneArg(item);
          const v = a === null ? null : nginxDuration(a);
          if (v === null) this.error(item.line, `"keepalive_timeout": "${item.args.join(' ')}" is not a time`);
          else up.keepaliveTimeout = v;
          break;
        }
        case 'least_conn':
          setBalance(item.line, 'least_conn');
          break;
        case 'ip_hash':
          setBalance(item.line, 'ip_hash');
          break;
        case 'least_time':
          this.warn(item.line, `"least_time" (nginx Plus) is not supported by sessionlb; using "least_conn" instead`);
          setBalance(item.line, 'least_conn');
          break;
        case 'hash': {
          const key = item.args[0];
          if (key === undefined || item.args.length > 2 || (item.args.length === 2 && item.args[1] !== 'consistent')) {
            this.error(item.line, `"hash" takes a key and optionally "consistent": hash $cookie_PHPSESSID consistent`);
            break;
          }
          setBalance(item.line, item.args[1] === 'consistent' ? { hash: key, consistent: true } : { hash: key });
          break;
        }
        case 'random': {
          const [two, method, ...rest] = item.args;
          if (two === undefined) {
            setBalance(item.line, 'random');
          } else if (two !== 'two' || rest.length > 0) {
            this.error(item.line, `invalid parameters in "random ${item.args.join(' ')}" (expected: random [two [least_conn]])`);
          } else if (method === undefined || method === 'least_conn') {
            setBalance(item.line, method === undefined ? { random: 'two' } : { random: 'two', pick: 'least_conn' });
          } else {
            this.warn(item.line, `"random two ${method}" is not supported by sessionlb; using "random two least_conn"`);
            setBalance(item.line, { random: 'two', pick: 'least_conn' });
          }
          break;
        }
        case 'zone':
          this.warn(item.line, `"zone" is not needed: sessionlb keeps server state in its own process (share session bindings through "sessionStore"); ignored`);
          break;
        case 'sticky':
          this.sticky(item, up);
          break;
        default:
          this.unsupported(item, `in upstream "${name}"`);
      }
    }
    if (up.servers.length === 0) this.error(d.line, `upstream "${name}" has no usable servers`);
    this.upstreams.set(name, up);
    this.upstreamLines.set(name, d.line);
  }

  private upstreamServer(d: NginxDirective): RawUpstreamServer | null {
    const addr = this.oneArg(d);
    if (addr === null) return null;
    if (addr.startsWith('unix:')) {
      this.error(d.line, `server "${addr}": unix sockets are not supported by sessionlb (use host:port)`);
      return null;
    }
    const hp = parseHostPort(addr, 80);
    if (typeof hp === 'string') {
      this.error(d.line, `server "${addr}": ${hp}`);
      return null;
    }
    // nginx's default port is 80; write it out so the JSON says what it means.
    const s: RawUpstreamServer = { address: /:\d+$/.test(addr) && !addr.endsWith(']') ? addr : formatHostPort(hp.host, hp.port) };
    for (const p of d.args.slice(1)) {
      const eq = p.indexOf('=');
      const key = eq === -1 ? p : p.slice(0, eq);
      const value = eq === -1 ? '' : p.slice(eq + 1);
      const int = (set: (n: number) => void): void => {
        if (isInt(value)) set(Number(value));
        else this.error(d.line, `invalid parameter "${p}" of server ${addr} (expected a number)`);
      };
      const time = (set: (t: string) => void): void => {
        const t = nginxDuration(value);
        if (t !== null) set(t);
        else this.error(d.line, `invalid parameter "${p}" of server ${addr} (expected a time such as "10s")`);
      };
      switch (key) {
        case 'weight': int((n) => { s.weight = n; }); break;
        case 'max_fails': int((n) => { s.maxFails = n; }); break;
        case 'max_conns': int((n) => { s.maxConns = n; }); break;
        case 'fail_timeout': time((t) => { s.failTimeout = t; }); break;
        case 'slow_start': time((t) => { s.slowStart = t; }); break;
        case 'backup': s.backup = true; break;
        case 'down': s.down = true; break;
        case 'drain': s.drain = true; break;
        case 'resolve':
          this.warn(d.line, `server ${addr}: "resolve" is not supported; sessionlb resolves hostnames at start and on reload only`);
          break;
        default:
          this.warn(d.line, `server ${addr}: parameter "${p}" is not supported by sessionlb; ignored`);
      }
    }
    return s;
  }

  /** nginx Plus `sticky learn ...` / `sticky cookie NAME ...`. */
  private sticky(d: NginxDirective, up: Upstream): void {
    const [mode, ...params] = d.args;
    const named = (p: string): [string, string] => {
      const eq = p.indexOf('=');
      return eq === -1 ? [p, ''] : [p.slice(0, eq), p.slice(eq + 1)];
    };
    if (mode === 'learn') {
      let create = '';
      let lookup = '';
      let ttl: string | null = null;
      for (const p of params) {
        const [k, v] = named(p);
        if (k === 'create') create = v;
        else if (k === 'lookup') lookup = v;
        else if (k === 'timeout') {
          ttl = nginxDuration(v);
          if (ttl === null) this.error(d.line, `"sticky learn": "${p}" is not a time`);
        } else if (k !== 'zone') this.warn(d.line, `"sticky learn": parameter "${p}" is not supported by sessionlb; ignored`);
      }
      const created = /^\$upstream_cookie_([A-Za-z0-9_-]+)$/.exec(create)?.[1];
      const looked = /^\$cookie_([A-Za-z0-9_-]+)$/.exec(lookup)?.[1];
      if (created === undefined || looked === undefined || created.toLowerCase() !== looked.toLowerCase()) {
        this.warn(d.line, `"sticky learn" is converted only in the form create=$upstream_cookie_NAME lookup=$cookie_NAME (the same cookie); ignored`);
        return;
      }
      up.sticky = { mode: 'learn', cookie: created, ...(ttl !== null ? { ttl } : {}) };
      this.notes.push({ line: d.line, message: `"sticky learn": bindings live in "sessionStore" (the embedded "memory" store unless you add {"type": "memcached", "servers": [...]}); "zone" is not needed` });
      return;
    }
    if (mode === 'cookie') {
      const [cookie, ...rest] = params;
      if (cookie === undefined || cookie.includes('=')) {
        this.error(d.line, `"sticky cookie" needs a cookie name`);
        return;
      }
      for (const p of rest) {
        const [k] = named(p);
        if (k !== 'httponly' && k !== 'secure') {
          this.warn(d.line, `"sticky cookie": parameter "${p}" is not supported (sessionlb's cookie is a session cookie with Path=/, HttpOnly, SameSite=Lax, signed); ignored`);
        }
      }
      up.sticky = { mode: 'cookie', cookie };
      return;
    }
    this.warn(d.line, `"sticky ${mode ?? ''}" is not supported by sessionlb (only "learn" and "cookie"); ignored`);
  }

  // ---- server { } ----

  private server(d: NginxDirective, httpScope: ProxyScope): void {
    if (d.block === null) {
      this.error(d.line, `"server" in http needs a block: server { listen ...; location / { proxy_pass ...; } }`);
      return;
    }
    const scope = this.childScope(httpScope, d.block);
    const vs: Mutable<RawVirtualServer> & { listen: string[]; locations: Location[] } = { listen: [], locations: [] };
    const names: string[] = [];
    let sawListen = false;
    const locationDirectives: NginxDirective[] = [];
    for (const item of d.block) {
      if (this.isProxyDirective(item)) continue;
      switch (item.name) {
        case 'listen':
          sawListen = true;
          this.listen(item, vs);
          break;
        case 'server_name':
          for (const n of item.args) {
            if (n.startsWith('~')) this.warn(item.line, `server_name "${n}": regular expressions are not supported by sessionlb; ignored`);
            else if (!names.includes(n)) names.push(n);
          }
          break;
        case 'client_max_body_size':
          this.size(item, (v) => { vs.clientMaxBodySize = v; });
          break;
        case 'location':
          locationDirectives.push(item);
          break;
        case 'keepalive_timeout':
          this.warn(item.line, `"keepalive_timeout" in a server is not supported (sessionlb has one, at the top level: put it in http); ignored`);
          break;
        default:
          this.unsupported(item, item.block !== null ? 'block in server' : 'in server');
      }
    }
    // nginx's default when there is no listen: *:80.
    if (!sawListen) vs.listen.push('80');
    const label = `server ${names[0] ?? `(${this.at(d.line)})`}`;
    for (const loc of locationDirectives) this.location(loc, scope, vs.locations, label);
    // Keys in the order the README documents them.
    const ordered: Mutable<RawVirtualServer> = {
      listen: vs.listen,
      ...(names.length > 0 ? { serverName: names } : {}),
      ...(vs.default ? { default: true } : {}),
      locations: vs.locations,
    };
    if (vs.clientMaxBodySize !== undefined) ordered.clientMaxBodySize = vs.clientMaxBodySize;
    this.top.servers.push(ordered as RawVirtualServer);
  }

  private listen(d: NginxDirective, vs: Mutable<RawVirtualServer> & { listen: string[] }): void {
    const addr = this.oneArg(d);
    if (addr === null) return;
    if (addr.startsWith('unix:')) {
      this.warn(d.line, `listen "${addr}": unix sockets are not supported by sessionlb; ignored`);
      return;
    }
    let text = addr.startsWith('*:') ? `0.0.0.0:${addr.slice(2)}` : addr;
    if (!/^\d+$/.test(text) && !/:\d+$/.test(text)) text = `${text.startsWith('[') || isIP(text) !== 6 ? text : `[${text}]`}:80`;
    const hp = parseHostPort(text, undefined);
    if (typeof hp === 'string') {
      this.error(d.line, `listen "${addr}": ${hp}`);
      return;
    }
    let keep = true;
    for (const p of d.args.slice(1)) {
      if (p === 'default_server' || p === 'default') vs.default = true;
      else if (p === 'ssl' || p === 'quic' || p === 'http2') {
        this.warn(d.line, `listen ${addr} ${p}: sessionlb has no TLS/HTTP2/QUIC (terminate TLS in front of it); this listen address is not converted`);
        keep = false;
      } else {
        this.warn(d.line, `listen ${addr}: parameter "${p}" is not supported by sessionlb; ignored`);
      }
    }
    if (keep && !vs.listen.includes(text)) vs.listen.push(text);
  }

  // ---- location { } ----

  private location(d: NginxDirective, serverScope: ProxyScope, out: Location[], serverLabel: string): void {
    let exact = false;
    let path: string | undefined;
    const [a0, a1] = d.args;
    if (d.block === null || a0 === undefined) {
      this.error(d.line, `"location" needs a path and a block`);
      return;
    }
    if (a0 === '=' ) { exact = true; path = a1; }
    else if (a0 === '^~') path = a1;
    else if (a0 === '~' || a0 === '~*' || a0.startsWith('~')) {
      this.warn(d.line, `location ${d.args.join(' ')}: regular-expression locations are not supported by sessionlb; this location is not converted`);
      return;
    } else if (a0.startsWith('@')) {
      this.warn(d.line, `location ${a0}: named locations are not supported by sessionlb; this location is not converted`);
      return;
    } else if (a0.startsWith('=')) { exact = true; path = a0.slice(1); }
    else if (a0.startsWith('^~')) path = a0.slice(2);
    else path = a0;
    const expected = a0 === '=' || a0 === '^~' ? 2 : 1;
    if (path === undefined || d.args.length !== expected) {
      this.error(d.line, `invalid number of arguments in "location ${d.args.join(' ')}"`);
      return;
    }
    const scope = this.childScope(serverScope, d.block);
    const where = `${serverLabel}, location ${exact ? '= ' : ''}${path} (${this.at(d.line)})`;
    let proxyPass: NginxDirective | null = null;
    let healthCheck: Sourced<HealthCheck> | null = null;
    let clientMaxBodySize: string | undefined;
    for (const item of d.block) {
      if (this.isProxyDirective(item)) continue;
      switch (item.name) {
        case 'proxy_pass':
          proxyPass = item;
          break;
        case 'client_max_body_size':
          this.size(item, (v) => { clientMaxBodySize = v; });
          break;
        case 'health_check':
          healthCheck = { value: this.healthCheck(item), line: item.line };
          break;
        case 'location':
          this.warn(item.line, `nested location ${item.args.join(' ')} is not supported by sessionlb; not converted (write it as a location of its own)`);
          break;
        default:
          this.unsupported(item, item.block !== null ? 'block in location' : 'in location');
      }
    }
    if (proxyPass === null) {
      this.warn(d.line, `location ${exact ? '= ' : ''}${path} has no proxy_pass; sessionlb locations only proxy, so it is not converted (requests for it go to the next matching location)`);
      return;
    }
    const url = proxyPass.args[0] ?? '';
    const m = /^http:\/\/([^/?#]+)(.*)$/.exec(url);
    if (proxyPass.args.length !== 1 || m === null || url.includes('$')) {
      this.warn(proxyPass.line, `proxy_pass ${proxyPass.args.join(' ')}: sessionlb supports "http://UPSTREAM[/uri]" and "http://host:port[/uri]" (no https, unix sockets or variables); location ${path} is not converted`);
      return;
    }
    let target = m[1]!;
    const uri = m[2]!;
    const isAddress = !this.upstreams.has(target);
    if (isAddress) {
      const key = addressKey(target);
      if (key === null) {
        this.error(proxyPass.line, `proxy_pass ${url}: "${target}" is neither an upstream defined in this file nor a host:port`);
        return;
      }
      target = key;
    }
    const loc: Location = exact ? { path, exact: true, proxyPass: `http://${target}${uri}` } : { path, proxyPass: `http://${target}${uri}` };
    const headers = this.headers(scope, target, where, d.line);
    if (headers !== null) loc.proxySetHeader = headers;
    if (clientMaxBodySize !== undefined) loc.clientMaxBodySize = clientMaxBodySize;
    out.push(loc);
    this.usages.push({ target, location: loc, uri, where, line: d.line, scope, healthCheck, isAddress });
  }

  private headers(scope: ProxyScope, target: string, where: string, locLine: number): Record<string, string> | null {
    const out: Record<string, string> = {};
    let hasHost = false;
    for (const [name, value, line] of scope.setHeaders?.value ?? []) {
      if (name.toLowerCase() === 'host') hasHost = true;
      if (headerIsDefault(name, value)) continue;
      if (name.toLowerCase() === 'host' && value === '$proxy_host') {
        out[name] = target;
      } else if (!value.includes('$')) {
        out[name] = value;
      } else if (!this.headerWarned.has(line)) {
        // Once per directive, even when many locations inherit it.
        this.headerWarned.add(line);
        this.warn(line, `proxy_set_header ${name} "${value}": variables are not supported in sessionlb's proxySetHeader; not converted (${where})`);
      }
    }
    if (!hasHost && !this.hostNoteGiven) {
      this.hostNoteGiven = true;
      this.notes.push({ line: locLine, message: `nginx sends "Host: ${target}" ($proxy_host) upstream unless told "proxy_set_header Host $host"; sessionlb keeps the client's Host (set proxySetHeader {"Host": "${target}"} for the old behaviour)` });
    }
    return Object.keys(out).length > 0 ? out : null;
  }

  /** nginx Plus `health_check [interval=T] [fails=N] [passes=N] [uri=U] [port=N] [mandatory]`. */
  private healthCheck(d: NginxDirective): HealthCheck {
    const hc: Mutable<HealthCheck> = {};
    for (const p of d.args) {
      const eq = p.indexOf('=');
      const key = eq === -1 ? p : p.slice(0, eq);
      const value = eq === -1 ? '' : p.slice(eq + 1);
      const int = (set: (n: number) => void): void => {
        if (isInt(value)) set(Number(value));
        else this.error(d.line, `"health_check": "${p}" is not a number`);
      };
      switch (key) {
        case 'interval': {
          const t = nginxDuration(value);
          if (t === null) this.error(d.line, `"health_check": "${p}" is not a time`);
          else hc.interval = t;
          break;
        }
        case 'fails': int((n) => { hc.fails = n; }); break;
        case 'passes': int((n) => { hc.passes = n; }); break;
        case 'port': int((n) => { hc.port = n; }); break;
        case 'uri': hc.path = value; break;
        case 'mandatory': hc.mandatory = true; break;
        default:
          this.warn(d.line, `"health_check": parameter "${p}" is not supported by sessionlb; ignored`);
      }
    }
    return hc;
  }

  // ---- per-location settings that are per-upstream in sessionlb ----

  private applyUsages(): void {
    const byTarget = new Map<string, Usage[]>();
    for (const u of this.usages) {
      const list = byTarget.get(u.target);
      if (list) list.push(u);
      else byTarget.set(u.target, [u]);
    }
    for (const [target, usages] of byTarget) {
      const settings: Partial<Pick<Upstream, 'nextUpstream' | 'timeouts' | 'healthCheck'>> = {};
      const nextUpstream: NonNullable<Upstream['nextUpstream']> = {};
      const timeouts: NonNullable<Upstream['timeouts']> = {};
      const pick = <T>(
        directive: string,
        get: (s: ProxyScope) => Sourced<T> | undefined,
        defaultValue: T,
        canon: (v: T) => string,
        show: (v: T) => string,
        set: (v: T) => void,
      ): void => {
        const seen = usages.map((u) => ({ u, s: get(u.scope) }));
        const distinct = new Set(seen.map(({ s }) => canon(s === undefined ? defaultValue : s.value)));
        const chosen = seen.find(({ s }) => s !== undefined);
        if (chosen === undefined) return;
        set(chosen.s!.value);
        if (distinct.size > 1) {
          const detail = seen.map(({ u, s }) => `${u.where}: ${s === undefined ? `${show(defaultValue)} (default)` : show(s.value)}`).join('; ');
          this.warn(chosen.s!.line, `${directive} differs between locations that proxy to "${target}", and sessionlb has one value per upstream; using ${show(chosen.s!.value)} from ${this.at(chosen.s!.line)} for all of them (${detail})`);
        }
      };
      const ms = (v: string): string => String(parseDuration(v));
      pick('proxy_next_upstream', (s) => s.nextUpstream, NGINX_DEFAULT_NEXT_UPSTREAM, (v) => [...v].sort().join(' '), (v) => v.join(' '), (v) => { nextUpstream.on = v as Array<typeof NEXT_UPSTREAM_CONDITIONS[number]>; });
      pick('proxy_next_upstream_tries', (s) => s.tries, 0, String, String, (v) => { nextUpstream.tries = v; });
      pick('proxy_next_upstream_timeout', (s) => s.nextTimeout, '0s', ms, String, (v) => { nextUpstream.timeout = v; });
      pick('proxy_connect_timeout', (s) => s.connect, DEFAULT_TIMEOUT, ms, String, (v) => { timeouts.connect = v; });
      pick('proxy_send_timeout', (s) => s.send, DEFAULT_TIMEOUT, ms, String, (v) => { timeouts.send = v; });
      pick('proxy_read_timeout', (s) => s.read, DEFAULT_TIMEOUT, ms, String, (v) => { timeouts.read = v; });
      // health_check: a location without one does not mean "no checks" (nginx checks the group).
      const checks = usages.filter((u) => u.healthCheck !== null);
      if (checks.length > 0) {
        const first = checks[0]!.healthCheck!;
        settings.healthCheck = first.value;
        const different = checks.filter((u) => JSON.stringify(u.healthCheck!.value) !== JSON.stringify(first.value));
        for (const u of different) {
          this.warn(u.healthCheck!.line, `health_check differs from the one on ${this.at(first.line)} for upstream "${target}"; sessionlb has one per upstream and uses that one (${u.where})`);
        }
      }
      if (Object.keys(nextUpstream).length > 0) settings.nextUpstream = nextUpstream;
      if (Object.keys(timeouts).length > 0) settings.timeouts = timeouts;
      if (Object.keys(settings).length === 0) continue;
      let up = this.upstreams.get(target);
      if (up === undefined) {
        // proxy_pass http://host:port with per-location settings: give the address an upstream of its own.
        let name = target.replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^_+|_+$/g, '');
        while (this.upstreams.has(name)) name += '_';
        up = { servers: [{ address: target }] };
        this.upstreams.set(name, up);
        for (const u of usages) u.location.proxyPass = `http://${name}${u.uri}`;
        this.notes.push({ line: usages[0]!.line, message: `proxy_pass http://${target} has timeouts/retry settings, which sessionlb keeps per upstream: it becomes upstream "${name}"` });
      }
      Object.assign(up, settings);
    }
  }
}

/**
 * Converts nginx configuration text into sessionlb's configuration. Throws NginxSyntaxError
 * (with the line) when the text is not nginx syntax; everything else is reported in the result.
 */
export function importNginx(text: string, file: string): ImportResult {
  const includes = new IncludeExpander(file);
  const tree = includes.expand(parseNginx(text, file), [resolve(file)]);
  const c = new Converter(includes.files);
  const config = c.convert(tree);
  // Lines sort by file (in the order nginx reads them), then by line; each gets its file back.
  const byLine = (a: ImportDiagnostic, b: ImportDiagnostic): number => a.line - b.line;
  const located = (list: ImportDiagnostic[]): ImportDiagnostic[] => list.sort(byLine).map((d) => {
    const at = decodeLine(d.line);
    return at.file === 0 ? d : { line: at.line, message: d.message, file: includes.files[at.file] };
  });
  return {
    config,
    warnings: located([...includes.warnings, ...c.warnings]),
    notes: located([...c.notes]),
    errors: located([...includes.errors, ...c.errors]),
  };
}

/**
 * Lines of included files are numbered `file index x LINE_BASE + line` while converting, so the
 * converter keeps one number per place (and its diagnostics sort by file, then line); importNginx
 * turns them back into file and line.
 */
const LINE_BASE = 10_000_000;

function encodeLine(file: number, line: number): number {
  return file * LINE_BASE + line;
}

function decodeLine(encoded: number): { file: number; line: number } {
  return { file: Math.floor(encoded / LINE_BASE), line: encoded % LINE_BASE };
}

/** "conf.d/a.conf:12": an encoded line with the name of its file (`files` by index). */
function fileAndLine(files: readonly string[], encoded: number): string {
  const at = decodeLine(encoded);
  return `${files[at.file]}:${at.line}`;
}

/** nginx has no limit but loops; this is far deeper than any real configuration. */
const MAX_INCLUDE_DEPTH = 16;

/**
 * nginx `include FILE|MASK;`: the directives of the file(s) take the place of the include, in
 * whatever block it is in. A relative path is relative to the directory of the main file
 * (nginx's conf prefix when run with `-c`). A mask (`*`, `?`, `[...]`) may only be in the last
 * path component here; its matches are read in name order, and a dot file is matched only by a
 * mask that starts with a dot (glob(3), which nginx uses). A mask matching nothing (or naming a
 * directory that does not exist) is fine, as in nginx; a missing file, an unreadable one or an
 * include loop is a warning (the rest still converts: a config copied from another machine
 * often names files that are not here).
 */
class IncludeExpander {
  /** Index = the file's number in LINE_BASE terms; 0 is the main file. Shown as given or relative to the main file's directory. */
  readonly files: string[];
  readonly warnings: ImportDiagnostic[] = [];
  readonly errors: ImportDiagnostic[] = [];
  private readonly baseDir: string;

  constructor(mainFile: string) {
    this.files = [mainFile];
    this.baseDir = dirname(resolve(mainFile));
  }

  /** `tree` with its includes (in any block) replaced by what they include. `stack`: absolute paths being read. */
  expand(tree: NginxDirective[], stack: string[]): NginxDirective[] {
    const out: NginxDirective[] = [];
    for (const d of tree) {
      if (d.name === 'include' && d.block === null) {
        out.push(...this.include(d, stack));
      } else {
        out.push(d.block === null ? d : { ...d, block: this.expand(d.block, stack) });
      }
    }
    return out;
  }

  private include(d: NginxDirective, stack: string[]): NginxDirective[] {
    const notFollowed = (why: string): NginxDirective[] => {
      this.warnings.push({ line: d.line, message: `"include ${d.args.join(' ')}" is not followed: ${why}; convert that file separately and merge its upstreams/servers` });
      return [];
    };
    if (d.args.length !== 1) return notFollowed('it needs exactly one file name or mask');
    const pattern = isAbsolute(d.args[0]!) ? d.args[0]! : join(this.baseDir, d.args[0]!);
    let paths: string[];
    if (/[*?[]/.test(pattern)) {
      if (/[*?[]/.test(dirname(pattern))) return notFollowed('masks are supported in the file name only, not in directories');
      let names: string[];
      try {
        names = readdirSync(dirname(pattern));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // No directory, no match: nginx's glob finds nothing and goes on.
        if (code === 'ENOENT' || code === 'ENOTDIR') return [];
        return notFollowed(`cannot read the directory (${code ?? (err as Error).message})`);
      }
      const mask = maskPattern(basename(pattern));
      paths = names.filter((n) => mask.test(n)).sort().map((n) => join(dirname(pattern), n));
    } else {
      paths = [pattern];
    }
    const out: NginxDirective[] = [];
    for (const path of paths) {
      if (stack.includes(path)) {
        out.push(...notFollowed(`${this.shown(path)} includes itself (through ${stack.slice(1).map((p) => this.shown(p)).join(' -> ') || 'the main file'})`));
        continue;
      }
      if (stack.length > MAX_INCLUDE_DEPTH) {
        out.push(...notFollowed(`includes are nested more than ${MAX_INCLUDE_DEPTH} deep`));
        continue;
      }
      let text: string;
      try {
        text = readFileSync(path, 'utf8');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // A mask's match that is a directory is skipped, as glob + nginx's open would fail on it anyway.
        if (code === 'EISDIR' && paths.length > 1) continue;
        out.push(...notFollowed(`cannot read ${this.shown(path)} (${code === 'ENOENT' ? 'no such file' : code ?? (err as Error).message})`));
        continue;
      }
      const index = this.files.length;
      this.files.push(this.shown(path));
      let tree: NginxDirective[];
      try {
        tree = parseNginx(text, this.shown(path));
      } catch (err) {
        if (!(err instanceof NginxSyntaxError)) throw err;
        this.errors.push({ line: encodeLine(index, err.line), message: `${err.detail} (included from ${fileAndLine(this.files, d.line)})` });
        continue;
      }
      out.push(...this.expand(renumber(tree, index), [...stack, path]));
    }
    return out;
  }

  /** A path as the user wrote it: relative to the main file's directory when inside it. */
  private shown(path: string): string {
    const r = relative(this.baseDir, path);
    return r.startsWith('..') || isAbsolute(r) ? path : join(dirname(this.files[0]!), r);
  }
}

/** glob(3)'s `*`, `?` and `[...]` for one file name; a leading dot must be matched literally. */
function maskPattern(mask: string): RegExp {
  let re = '';
  for (let i = 0; i < mask.length; i++) {
    const c = mask[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = mask.indexOf(']', i + 2);
      if (end < 0) { re += '\\['; continue; }
      let set = mask.slice(i + 1, end);
      if (set.startsWith('!')) set = `^${set.slice(1)}`;
      re += `[${set.replace(/\\/g, '\\\\')}]`;
      i = end;
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(mask.startsWith('.') ? `^${re}$` : `^(?!\\.)${re}$`);
}

/** A parsed file's lines moved into its LINE_BASE range. */
function renumber(tree: NginxDirective[], index: number): NginxDirective[] {
  return tree.map((d) => ({ ...d, line: encodeLine(index, d.line), block: d.block === null ? null : renumber(d.block, index) }));
}

/**
 * JSON text for a configuration: two-space indentation like `JSON.stringify(v, null, 2)`, but
 * arrays of plain values and small objects without nesting on one line, as the README writes them.
 */
export function formatConfigJson(value: unknown): string {
  const render = (v: unknown, indent: string): string => {
    if (v === null || typeof v !== 'object') return JSON.stringify(v);
    const entries = Array.isArray(v) ? null : Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
    const items = entries === null ? (v as unknown[]) : entries.map(([, x]) => x);
    if (items.every((x) => x === null || typeof x !== 'object')) {
      const oneLine = entries === null
        ? `[${items.map((x) => JSON.stringify(x)).join(', ')}]`
        : `{ ${entries.map(([k, x]) => `${JSON.stringify(k)}: ${JSON.stringify(x)}`).join(', ')} }`;
      if (indent.length + oneLine.length <= 100) return oneLine;
    }
    const inner = `${indent}  `;
    if (entries === null) return `[\n${items.map((x) => inner + render(x, inner)).join(',\n')}\n${indent}]`;
    return `{\n${entries.map(([k, x]) => `${inner}${JSON.stringify(k)}: ${render(x, inner)}`).join(',\n')}\n${indent}}`;
  };
  return `${render(value, '')}\n`;
}
