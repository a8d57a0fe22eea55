/**
 * nginx add_header, proxy_hide_header and ignore_invalid_headers, resolved once per location:
 * for add_header and proxy_hide_header the nearest level (location, server, top level) that sets
 * any replaces its parent's entirely, as nginx's inheritance of array directives.
 */
import { compileTemplate, type TemplateContext } from '../nginx-language/variables.js';
import type { AddHeaderConfig } from './model.js';

type Level = { raw: Record<string, unknown>; at: PropertyKey[] };
type Report = (at: PropertyKey[], message: string) => void;
type RawAddHeader = Record<string, string | { value: string; always?: boolean }>;

function nearest(levels: readonly Level[], key: string): { value: unknown; at: PropertyKey[] } | null {
  for (let k = levels.length - 1; k >= 0; k--) {
    const level = levels[k]!;
    if (level.raw[key] !== undefined) return { value: level.raw[key], at: [...level.at, key] };
  }
  return null;
}

/** The add_header list of a location; a problem of an upper level is reported once (`seen`). */
export function resolveAddHeaders(levels: readonly Level[], context: TemplateContext, report: Report, seen: Set<string>): AddHeaderConfig[] {
  const found = nearest(levels, 'addHeader');
  if (found === null) return [];
  const out: AddHeaderConfig[] = [];
  for (const [name, entry] of Object.entries(found.value as RawAddHeader)) {
    const text = typeof entry === 'string' ? entry : entry.value;
    const always = typeof entry === 'string' ? false : entry.always === true;
    const at = [...found.at, name];
    const where = at.join('.');
    const problem = (message: string): void => {
      if (!seen.has(where)) report(typeof entry === 'string' ? at : [...at, 'value'], message);
      seen.add(where);
    };
    const value = compileTemplate(text, context);
    if (typeof value === 'string') {
      problem(value);
      continue;
    }
    const constant = value.variables.length === 0 ? value.evaluate(NO_SOURCE) : null;
    if (constant !== null && /[\r\n\0]/.test(constant)) {
      problem('must not contain CR, LF or NUL');
      continue;
    }
    // nginx: `add_header NAME ""` adds nothing.
    if (constant === '') continue;
    out.push({ name, value, constant, always });
  }
  return out;
}

/** A template without variables never reads its source. */
const NO_SOURCE = { req: null as never, remoteAddress: '' };

/** The proxy_hide_header set of a location, lower case; null when there is none. */
export function resolveHideHeaders(levels: readonly Level[]): ReadonlySet<string> | null {
  const found = nearest(levels, 'proxyHideHeader');
  if (found === null || (found.value as string[]).length === 0) return null;
  return new Set((found.value as string[]).map((n) => n.toLowerCase()));
}

/** nginx ignore_invalid_headers: the server's, else the top level's, else true. */
export function resolveIgnoreInvalidHeaders(levels: readonly Level[]): boolean {
  const found = nearest(levels.slice(0, 2), 'ignoreInvalidHeaders');
  return found === null ? true : found.value === true;
}

/** nginx's add_header statuses (without `always`). */
const ADD_HEADER_STATUSES = new Set([200, 201, 204, 206, 301, 302, 303, 304, 307, 308]);

/** Whether add_header entries without `always` apply to a response with `status`. */
export function addsHeadersFor(status: number): boolean {
  return ADD_HEADER_STATUSES.has(status);
}

/**
 * Appends the add_header entries that apply to `status` to the flat list `out`
 * (`src` for variables: the request). Nothing is looked up by name per request.
 */
export function appendAddHeaders(
  out: string[], headers: readonly AddHeaderConfig[], status: number,
  src: { readonly req: import('node:http').IncomingMessage; readonly remoteAddress: string },
): void {
  if (headers.length === 0) return;
  const normal = ADD_HEADER_STATUSES.has(status);
  for (const h of headers) {
    if (!normal && !h.always) continue;
    const v = h.constant ?? h.value.evaluate(src);
    if (v === '' || /[\r\n\0]/.test(v)) continue;
    out.push(h.name, v);
  }
}

/** The add_header entries that apply to `status` as a new flat list, or undefined when none do. */
export function addedHeaders(
  headers: readonly AddHeaderConfig[], status: number,
  src: { readonly req: import('node:http').IncomingMessage; readonly remoteAddress: string },
): string[] | undefined {
  if (headers.length === 0) return undefined;
  const out: string[] = [];
  appendAddHeaders(out, headers, status, src);
  return out.length === 0 ? undefined : out;
}
