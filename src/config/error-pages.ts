/**
 * nginx `error_page CODES [=RESPONSE] FILE|URL` as `errorPage` on the top level, a server and a
 * location (a level that sets it replaces its parent's, as nginx inherits it): the schema keys
 * (spread into schema.ts), their resolution per location and server, and the page files, read at
 * every load (a reload with an unreadable one fails, naming it, and keeps the pages in use).
 * `"uri"` is nginx's internal redirect: the page comes from the location of the same server that
 * takes that URI (proxy/http/listener.ts).
 */
import { readFile } from 'node:fs/promises';
import { extname, isAbsolute, resolve } from 'node:path';
import { z } from 'zod';

/** One status code's nginx error_page: a file (read at load) or a redirect. */
export type ErrorPageAction =
  | { kind: 'file'; file: string; status: number | null; contentType: string; body: Buffer }
  | { kind: 'redirect'; url: string; status: number }
  /** nginx's internal redirect: a GET of `uri` through the server's location for it; `status`: the `=RESPONSE` (null: the original status). */
  | { kind: 'uri'; uri: string; status: number | null };

/** Status -> its page, for one location or server. */
export type ErrorPages = ReadonlyMap<number, ErrorPageAction>;

/** What readErrorPageFiles reads of a Config (not imported: model.ts imports this module's types). */
interface ServersWithPages {
  servers: readonly { index: number; errorPages?: ErrorPages | null; locations: readonly { errorPages?: ErrorPages | null }[] }[];
}

const code = z.number({ error: 'must be an HTTP status code (300-599)' }).int().min(300).max(599);

export const errorPageRuleSchema = z.strictObject({
  codes: z.array(code, { error: 'must be an array of status codes such as [502, 503, 504]' }).min(1)
    .describe('the statuses this page answers (sessionlb\'s own: 404, 413, 502, 503, 504...; an upstream\'s are passed unchanged)'),
  file: z.string().min(1).optional()
    .describe('a page file (relative paths: to the config file), read at load and on every reload; Content-Type by extension (.html, .txt, .json)'),
  redirect: z.string().regex(/^https?:\/\/[^\s]+$/, { error: 'must be an absolute http:// or https:// URL' }).optional()
    .describe('nginx `error_page CODE http://...`: a redirect (302 unless `response` says otherwise)'),
  uri: z.string().regex(/^\/[^\s#]*$/, { error: 'must be a local URI such as "/errors/50x.html"' }).optional()
    .describe('nginx `error_page CODE /uri`: the page is a GET of this URI through the location of the same server that takes it (an upstream serving the pages), answered with the original status (or `response`)'),
  response: z.number({ error: 'must be an HTTP status code (200-599)' }).int().min(200).max(599).optional()
    .describe('nginx `=RESPONSE`: the status answered instead of the original, such as 200 (with `redirect`: 301, 302, 303, 307 or 308)'),
});

export const errorPageKeys = {
  errorPage: z.array(errorPageRuleSchema, { error: 'must be an array such as [{"codes": [502, 503, 504], "file": "/srv/maintenance.html"}]' }).optional()
    .describe('nginx error_page: pages for the errors sessionlb answers itself; replaces the list of the enclosing level (server, top level); [] = none'),
};

type RawRule = z.infer<typeof errorPageRuleSchema>;


const TYPES: Record<string, string> = {
  '.html': 'text/html', '.htm': 'text/html', '.txt': 'text/plain', '.json': 'application/json',
};

type Report = (at: PropertyKey[], message: string) => void;
interface Level { raw: { errorPage?: RawRule[] }; at: PropertyKey[] }

/** The nearest level's errorPage, resolved (files not read yet: `body` empty); null = none. */
export function resolveErrorPages(levels: readonly Level[], dir: string, report: Report, seen: Set<string>): ErrorPages | null {
  let found: Level | undefined;
  for (const l of levels) if (l.raw.errorPage !== undefined) found = l;
  if (found === undefined || found.raw.errorPage!.length === 0) return null;
  const where = [...found.at, 'errorPage'];
  const first = !seen.has(where.join('.'));
  seen.add(where.join('.'));
  const say = (at: PropertyKey[], message: string): void => { if (first) report(at, message); };
  const out = new Map<number, ErrorPageAction>();
  found.raw.errorPage!.forEach((rule, k) => {
    const at = [...where, k];
    const targets = [rule.file, rule.redirect, rule.uri].filter((t) => t !== undefined).length;
    if (targets !== 1) { say(at, 'needs exactly one of "file", "redirect" or "uri"'); return; }
    let action: ErrorPageAction;
    if (rule.uri !== undefined) {
      action = { kind: 'uri', uri: rule.uri, status: rule.response ?? null };
    } else if (rule.redirect !== undefined) {
      const status = rule.response ?? 302;
      if (![301, 302, 303, 307, 308].includes(status)) { say([...at, 'response'], 'must be 301, 302, 303, 307 or 308 with "redirect"'); return; }
      action = { kind: 'redirect', url: rule.redirect, status };
    } else {
      const file = isAbsolute(rule.file!) ? rule.file! : resolve(dir, rule.file!);
      const contentType = TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream';
      action = { kind: 'file', file, status: rule.response ?? null, contentType, body: Buffer.alloc(0) };
    }
    for (const c of rule.codes) if (!out.has(c)) out.set(c, action); // nginx: the first error_page for a code wins
  });
  return out;
}

/** Reads every page file of `config` (each once) into its pages; a file that cannot be read is a problem naming it. */
export async function readErrorPageFiles(config: ServersWithPages, report: Report): Promise<void> {
  const reads = new Map<string, Promise<Buffer | string>>();
  const reported = new Set<string>();
  const fill = async (pages: ErrorPages | null | undefined, at: PropertyKey[]): Promise<void> => {
    if (pages == null) return;
    for (const page of new Set(pages.values())) {
      if (page.kind !== 'file') continue;
      let read = reads.get(page.file);
      if (read === undefined) reads.set(page.file, read = readFile(page.file).catch((err: NodeJS.ErrnoException) => err.code === 'ENOENT' ? 'no such file' : err.message));
      const got = await read;
      if (typeof got === 'string') {
        if (!reported.has(page.file)) report(at, `error page ${page.file}: ${got}`);
        reported.add(page.file);
      } else {
        page.body = got;
      }
    }
  };
  for (const vs of config.servers) {
    await fill(vs.errorPages, ['servers', vs.index, 'errorPage']);
    for (const [j, loc] of vs.locations.entries()) await fill(loc.errorPages, ['servers', vs.index, 'locations', j, 'errorPage']);
  }
}
