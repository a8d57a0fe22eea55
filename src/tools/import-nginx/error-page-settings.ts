/**
 * nginx `error_page CODE ... [=[RESPONSE]] URI|URL` (http, server, location) -> `errorPage` rules
 * at the same level (error-pages.ts; a level with any replaces its parent's, as nginx inherits
 * them), and `proxy_intercept_errors`.
 *
 * A URL becomes `redirect`. A local URI is nginx's internal redirect: the location that would
 * serve it is found as nginx finds it, in the same server (ErrorPageSite:
 * "=", then the longest prefix, "^~", the regular expressions in order: router.ts' matchLocation
 * over the nginx locations), and when that location serves a static file (`root`, its own or
 * inherited, or `alias`) the rule becomes that `file`. When it proxies, the rule is `uri` (sessionlb
 * makes that internal redirect too). Otherwise (it returns, has variables, a relative root, ...)
 * the rule is written with `uri` and a warning: sessionlb would answer with its built-in page. A `location = URI` that only serves such pages (root/alias/internal) is left
 * out without a warning: its page is in the errorPage rule now.
 */
import { existsSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { matchLocation, type VirtualServerRoutes } from '../../proxy/http/router.js';
import { backtrackingRisk } from '../../config/locations.js';
import type { Conversion } from './conversion.js';
import type { NginxDirective } from './tokenizer.js';

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** One error_page directive as read. */
interface PageDirective {
  line: number;
  /** "error_page 502 503 /x.html" as written, for messages. */
  text: string;
  codes: number[];
  /** null: no "="; 0: "=" alone (the status of whatever answers the URI); else =RESPONSE. */
  response: number | null;
  target: string;
}

/** One errorPage rule as written (error-pages.ts' schema). */
interface PageRule {
  codes: number[];
  file?: string;
  redirect?: string;
  uri?: string;
  response?: number;
}

/** What one level's directives give. */
export interface ErrorPageScope {
  pages?: PageDirective[];
  intercept?: { value: boolean; line: number };
}

export function isErrorPageDirective(d: NginxDirective): boolean {
  return d.block === null && (d.name === 'error_page' || d.name === 'proxy_intercept_errors');
}

/** nginx's reading of error_page's arguments; a string: the error nginx gives. */
function parsePage(d: NginxDirective): PageDirective | string {
  if (d.args.length < 2) return 'invalid number of arguments in "error_page" directive';
  const target = d.args[d.args.length - 1]!;
  let response: number | null = null;
  let codeArgs = d.args.slice(0, -1);
  const last = codeArgs[codeArgs.length - 1]!;
  if (last.startsWith('=')) {
    if (codeArgs.length === 1) return `"error_page": invalid value "${last}" (the codes come first)`;
    if (last.length > 1 && !/^=\d{1,9}$/.test(last)) return `"error_page": invalid value "${last}"`;
    response = last.length > 1 ? Number(last.slice(1)) : 0;
    codeArgs = codeArgs.slice(0, -1);
  }
  const codes: number[] = [];
  for (const a of codeArgs) {
    if (!/^\d{1,9}$/.test(a)) return `"error_page": invalid value "${a}"`;
    const n = Number(a);
    if (n < 300 || n > 599) return `"error_page": value "${a}" must be between 300 and 599`;
    if (!codes.includes(n)) codes.push(n);
  }
  return { line: d.line, text: `error_page ${d.args.join(' ')}`, codes, response, target };
}

/** One directive of a level into `scope`. */
export function errorPageDirective(c: Conversion, d: NginxDirective, scope: ErrorPageScope): void {
  if (d.name === 'proxy_intercept_errors') {
    const a = d.args[0];
    if (d.args.length !== 1 || (a !== 'on' && a !== 'off')) c.error(d.line, '"proxy_intercept_errors": must be "on" or "off"');
    else scope.intercept = { value: a === 'on', line: d.line };
    return;
  }
  const page = parsePage(d);
  if (typeof page === 'string') c.error(d.line, page);
  else (scope.pages ??= []).push(page);
}

/** A warning said once per conversion, however many servers inherit what it is about. */
const said = new WeakMap<Conversion, Set<string>>();
function warnOnce(c: Conversion, line: number, message: string): void {
  let seen = said.get(c);
  if (seen === undefined) said.set(c, seen = new Set());
  const key = `${line}\n${message}`;
  if (seen.has(key)) return;
  seen.add(key);
  c.warn(line, message);
}

type Match = '' | '=' | '^~' | '~' | '~*';

/** A location's modifier and path as nginx reads them; null for named or malformed ones. */
function locationHead(d: NginxDirective): { match: Match; path: string } | null {
  const [a0, a1] = d.args;
  if (a0 === undefined || d.block === null || a0.startsWith('@')) return null;
  if ((a0 === '=' || a0 === '^~' || a0 === '~' || a0 === '~*') && a1 !== undefined) return { match: a0, path: a1 };
  for (const m of ['=', '^~', '~*', '~'] as const) if (a0.startsWith(m) && a0.length > m.length) return { match: m, path: a0.slice(m.length) };
  return { match: '', path: a0 };
}

/** Directives of a location that answer requests otherwise than with a file from its root. */
function notStatic(block: readonly NginxDirective[]): NginxDirective | undefined {
  return block.find((d) => d.name.endsWith('_pass') || d.name === 'return' || d.name === 'rewrite' || d.name === 'try_files'
    || d.name === 'if');
}

function lastOf(block: readonly NginxDirective[], name: string): NginxDirective | undefined {
  for (let i = block.length - 1; i >= 0; i--) if (block[i]!.name === name && block[i]!.block === null) return block[i];
  return undefined;
}

/** Where an error_page URI is served from: a file, or why it cannot be. */
/** A page file; or `uri`, served by sessionlb through a proxying location (`proxied`), else with why it will not be. */
type Resolution = { file: string } | { why: string; proxied?: true };

/**
 * One server's locations, as nginx would pick the one serving an error_page URI, and which of
 * them (and which `root` directives) end up giving page files.
 */
export class ErrorPageSite {
  private readonly routes: VirtualServerRoutes<NginxDirective>;
  private readonly found = new Map<string, Resolution>();
  private readonly pageLocations = new Set<NginxDirective>();
  /** `root` directives a page file was taken from (their "not supported" warning is not needed). */
  readonly usedRoots = new Set<NginxDirective>();
  /** The server's JSON object, for http-level pages that resolve differently per server. */
  out: Record<string, unknown> | null = null;
  /** Whether the server has error_page directives of its own. */
  ownPages = false;

  /** `root`: the server's `root` directive, else http's. */
  constructor(private readonly c: Conversion, readonly label: string, locations: readonly NginxDirective[], private readonly root: NginxDirective | undefined) {
    const exact = new Map<string, NginxDirective>();
    const prefixes: { path: string; stop: boolean; route: NginxDirective }[] = [];
    const regexes: { regex: RegExp; route: NginxDirective }[] = [];
    for (const loc of locations) {
      const head = locationHead(loc);
      if (head === null) continue;
      if (head.match === '=') {
        if (!exact.has(head.path)) exact.set(head.path, loc);
      } else if (head.match === '' || head.match === '^~') {
        prefixes.push({ path: head.path, stop: head.match === '^~', route: loc });
      } else if (backtrackingRisk(head.path) === null) {
        try {
          regexes.push({ regex: new RegExp(head.path, head.match === '~*' ? 'i' : ''), route: loc });
        } catch {
          // PCRE-only syntax: location-block.ts says it is not converted; nginx would try it here.
        }
      }
    }
    prefixes.sort((a, b) => b.path.length - a.path.length);
    this.routes = {
      name: label, addHeaders: [], uriPages: false, realIp: null, errorPages: null, serverReturn: null, exact, prefixes, regexes, anyRegex: null, slashRedirects: new Map(),
    };
  }

  /** Resolves every page URI of the server (its own, http's, its locations') up front: see onlyServesPages. */
  prepare(uris: Iterable<string>): void {
    for (const uri of uris) this.resolve(uri);
  }

  /** A `location = URI` left with only root/alias/internal after its page went into an errorPage file. */
  onlyServesPages(loc: NginxDirective): boolean {
    return this.pageLocations.has(loc) && locationHead(loc)?.match === '='
      && loc.block!.every((d) => d.block === null && (d.name === 'root' || d.name === 'alias' || d.name === 'internal'));
  }

  resolve(uri: string): Resolution {
    let r = this.found.get(uri);
    if (r === undefined) this.found.set(uri, r = this.find(uri));
    return r;
  }

  private find(uri: string): Resolution {
    if (uri.includes('$')) return { why: 'the URI has variables' };
    const q = uri.indexOf('?');
    const path = q === -1 ? uri : uri.slice(0, q);
    const loc = matchLocation(this.routes, path) as NginxDirective | null;
    const where = loc === null ? `no location of ${this.label} matches it` : `${this.label}, location ${loc.args.join(' ')} (${this.c.at(loc.line)})`;
    let file: string;
    let from: NginxDirective | undefined;
    if (loc !== null) {
      const handler = notStatic(loc.block!);
      if (handler !== undefined) {
        return handler.name === 'proxy_pass' ? { why: `${where} proxies it`, proxied: true } : { why: `${where} answers it with "${handler.name}", not a file` };
      }
      const alias = lastOf(loc.block!, 'alias');
      if (alias !== undefined) {
        const head = locationHead(loc)!;
        if (head.match === '~' || head.match === '~*') return { why: `${where} uses "alias" in a regular expression location (captures)` };
        const bad = badDirectory(alias);
        if (bad !== null) return { why: `${where}: ${bad}` };
        file = head.match === '=' ? alias.args[0]! : alias.args[0]! + path.slice(head.path.length);
        this.pageLocations.add(loc);
        return { file };
      }
      from = lastOf(loc.block!, 'root') ?? this.root;
    } else {
      from = this.root;
    }
    if (from === undefined) return { why: `${where} and no "root" is set (nginx would use its compiled-in "html" directory)` };
    const bad = badDirectory(from);
    if (bad !== null) return { why: `${where}: ${bad}` };
    file = from.args[0]!.replace(/\/+$/, '') + path;
    if (loc !== null) this.pageLocations.add(loc);
    this.usedRoots.add(from);
    return { file };
  }
}

/** Why a root/alias directive cannot give a file name here; null: it can. */
function badDirectory(d: NginxDirective): string | null {
  const dir = d.args[0];
  if (d.args.length !== 1 || dir === undefined) return `"${d.name}" needs one path`;
  if (dir.includes('$')) return `"${d.name} ${dir}" has variables`;
  if (!isAbsolute(dir)) return `"${d.name} ${dir}" is relative to nginx's prefix (often /usr/share/nginx or /etc/nginx), which the import does not know`;
  return null;
}

/** The URIs of a block's error_page directives that can be mapped to files (for ErrorPageSite.prepare). */
export function pageUris(scope: ErrorPageScope | undefined, block?: readonly NginxDirective[]): string[] {
  const pages = [...scope?.pages ?? []];
  for (const d of block ?? []) {
    if (d.name !== 'error_page' || d.block !== null) continue;
    const p = parsePage(d);
    if (typeof p !== 'string') pages.push(p);
  }
  return pages.filter((p) => p.target.startsWith('/') && p.response !== 0).map((p) => p.target);
}

/** `scope`'s pages as errorPage rules resolved in `site` (warnings for what cannot be kept as is). */
function rules(c: Conversion, pages: readonly PageDirective[], site: ErrorPageSite): PageRule[] {
  const out: PageRule[] = [];
  for (const p of pages) {
    const { codes, target, response } = p;
    if (target.startsWith('@')) {
      warnOnce(c, p.line, `${p.text}: named locations are not supported by sessionlb; this rule is not converted`);
    } else if (/^https?:\/\//.test(target)) {
      if (target.includes('$') || /\s/.test(target)) {
        warnOnce(c, p.line, `${p.text}: sessionlb's "redirect" is a fixed URL (no variables); this rule is not converted`);
        continue;
      }
      // nginx redirects with =301, 302, 303, 307 or 308 when given, else 302.
      out.push(response !== null && REDIRECTS.has(response) ? { codes, redirect: target, response } : { codes, redirect: target });
    } else if (target.startsWith('/')) {
      const found: Resolution = response === 0
        ? { why: `"=" without a code answers with the status of whatever serves ${target}` }
        : site.resolve(target);
      const withResponse = (rule: PageRule): PageRule => {
        if (response === null || response === 0) return rule;
        if (response >= 200 && response <= 599) return { ...rule, response };
        warnOnce(c, p.line, `${p.text}: sessionlb's "response" is a status from 200 to 599; written without it, the page goes out with the original status`);
        return rule;
      };
      if ('file' in found) {
        out.push(withResponse({ codes, file: found.file }));
        if (!existsSync(found.file)) {
          c.missingFiles.add(found.file);
          warnOnce(c, p.line, `${p.text}: ${found.file} does not exist on this machine; written as it is (sessionlb reads it at load: check fails until it is there)`);
        }
      } else {
        out.push(withResponse({ codes, uri: target }));
        // sessionlb makes the internal redirect to a location that proxies (the page from an upstream).
        if (response === 0) {
          warnOnce(c, p.line, `${p.text}: ${found.why}; it is written as "uri", which sessionlb answers with the original status`);
        } else if (!('proxied' in found)) {
          warnOnce(c, p.line, `${p.text}: ${found.why}, so it is written as "uri", which sessionlb serves only through a location that proxies: until then the error gets sessionlb's built-in page; write the page as "file" (or a "redirect")`);
        }
      }
    } else {
      warnOnce(c, p.line, `${p.text}: "${target}" is neither an absolute http(s):// URL nor a local URI; this rule is not converted`);
    }
  }
  return out;
}

/** A location's or server's pages (`own`: its own directives) into `out`, resolved in its server. */
export function writeErrorPages(c: Conversion, own: ErrorPageScope, out: Record<string, unknown>, site: ErrorPageSite): void {
  if (own.pages !== undefined) out.errorPage = rules(c, own.pages, site);
}

/**
 * http's pages: the top-level `errorPage` when they resolve alike in every server; else each
 * server without pages of its own gets them as nginx would resolve them there.
 */
export function writeHttpErrorPages(c: Conversion, own: ErrorPageScope, out: Record<string, unknown>, sites: readonly ErrorPageSite[], httpRoot: NginxDirective | undefined): void {
  const pages = own.pages;
  if (pages === undefined) return;
  const inheriting = sites.filter((s) => !s.ownPages);
  const per = (inheriting.length > 0 ? inheriting : [new ErrorPageSite(c, 'the servers', [], httpRoot)]).map((s) => [s, rules(c, pages, s)] as const);
  const first = JSON.stringify(per[0]![1]);
  if (per.every(([, r]) => JSON.stringify(r) === first)) {
    out.errorPage = per[0]![1];
    return;
  }
  for (const [s, r] of per) if (s.out !== null) s.out.errorPage = r;
}

/**
 * nginx with proxy_intercept_errors on also answers an upstream's error statuses with error_page;
 * sessionlb only its own errors. `chain`: the scopes of a proxying location, its server, http.
 */
export function checkIntercept(c: Conversion, chain: readonly ErrorPageScope[]): void {
  const intercept = chain.find((s) => s.intercept !== undefined)?.intercept;
  const pages = chain.find((s) => s.pages !== undefined)?.pages;
  if (intercept?.value !== true || pages === undefined || pages.length === 0) return;
  warnOnce(c, intercept.line, `"proxy_intercept_errors on": nginx also answers the upstream's own error statuses with the error_page rules (${c.at(pages[0]!.line)}); sessionlb's errorPage answers only the errors it makes itself, an upstream's pass unchanged; ignored`);
}
