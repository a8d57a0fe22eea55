/**
 * nginx `return` and the `rewrite` lines that are plain redirects (`rewrite ^ URL permanent;`,
 * `rewrite ^(.*)$ https://host$1 redirect;`) -> a sessionlb `return` of a server or location.
 * Anything else (internal rewrites, `last`/`break`, captures other than the whole path, variables
 * sessionlb has no value for) is a warning naming the line, and is not converted.
 */
import type { RawReturn } from '../../config/schema.js';
import { compileTemplate } from '../../nginx-language/variables.js';
import type { NginxDirective } from './tokenizer.js';
import type { Conversion } from './conversion.js';

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const ABSOLUTE = /^(https?:\/\/|\$scheme)/;

/** Whether `text` uses only variables a sessionlb template knows; warns (naming the directive) when not. */
function templateOk(c: Conversion, d: NginxDirective, text: string): boolean {
  const t = compileTemplate(text, { serverName: '' });
  if (typeof t !== 'string') return true;
  c.warn(d.line, `${d.name} ${d.args.join(' ')}: ${t}; not converted`);
  return false;
}

/** nginx `return code [text|URL]` / `return URL`; null (with a warning or error) when it cannot be kept. */
export function convertReturn(c: Conversion, d: NginxDirective): RawReturn | null {
  const [a0, a1] = d.args;
  if (a0 === undefined || d.args.length > 2) {
    c.error(d.line, 'invalid number of arguments in "return" directive');
    return null;
  }
  if (!/^\d+$/.test(a0)) {
    // `return URL`: a 302 when the URL is absolute (nginx requires http://, https:// or $scheme).
    if (d.args.length !== 1 || !ABSOLUTE.test(a0)) {
      c.error(d.line, `invalid return code "${a0}"`);
      return null;
    }
    return templateOk(c, d, a0) ? { code: 302, url: a0 } : null;
  }
  const code = Number(a0);
  if (code !== 444 && (code < 200 || code > 599)) {
    c.warn(d.line, `return ${d.args.join(' ')}: sessionlb returns codes 200-599 and 444; not converted`);
    return null;
  }
  if (a1 === undefined) {
    if (REDIRECTS.has(code)) {
      c.warn(d.line, `return ${code} without a URL: sessionlb's redirects need one; not converted`);
      return null;
    }
    return { code };
  }
  if (code === 444) return { code };
  if (!templateOk(c, d, a1)) return null;
  return REDIRECTS.has(code) ? { code, url: a1 } : { code, text: a1 };
}

/**
 * `rewrite REGEX URL [flag]` when it redirects every request it sees: REGEX is "^" (or captures the
 * whole path, "^(.*)$", whose $1 is $uri), the flag is `permanent` (301) or `redirect` (302), or the
 * URL is absolute (nginx then redirects with 302). nginx appends "?args" unless the URL ends with
 * "?": a URL ending in $uri becomes $request_uri (the same, with the query); another URL keeps
 * nginx's meaning only when it ends with "?".
 */
export function convertRewrite(c: Conversion, d: NginxDirective): RawReturn | null {
  const [regex, replacement, flag] = d.args;
  if (regex === undefined || replacement === undefined || d.args.length > 3) {
    c.error(d.line, 'invalid number of arguments in "rewrite" directive');
    return null;
  }
  const code = flag === 'permanent' ? 301 : flag === 'redirect' ? 302 : flag === undefined && ABSOLUTE.test(replacement) ? 302 : 0;
  if (code === 0) {
    c.warn(d.line, `rewrite ${d.args.join(' ')}: only redirects (flag "permanent" or "redirect", or an absolute URL) are converted; sessionlb has no internal rewrites; not converted`);
    return null;
  }
  const whole = regex === '^(.*)$' || regex === '^(.*)' || regex === '(.*)';
  if (regex !== '^' && regex !== '^.*$' && regex !== '.*' && !whole) {
    c.warn(d.line, `rewrite ${d.args.join(' ')}: only rewrites of every path ("^" or "^(.*)$") are converted to a return; not converted`);
    return null;
  }
  let url = replacement;
  if (whole) url = url.replaceAll('$1', '$uri').replaceAll('${1}', '$uri');
  if (/\$\{?\d/.test(url)) {
    c.warn(d.line, `rewrite ${d.args.join(' ')}: captures other than the whole path are not converted`);
    return null;
  }
  if (url.endsWith('?')) {
    url = url.slice(0, -1);
  } else if (url.endsWith('$uri') && !url.includes('?')) {
    url = `${url.slice(0, -4)}$request_uri`;
  } else {
    c.warn(d.line, `rewrite ${d.args.join(' ')}: nginx appends the request's query string to this URL, sessionlb's return does not; end the URL with $request_uri (or "?"); not converted`);
    return null;
  }
  if (!ABSOLUTE.test(url) && !url.startsWith('/')) {
    c.warn(d.line, `rewrite ${d.args.join(' ')}: the target is not a URL or a path; not converted`);
    return null;
  }
  return templateOk(c, d, url) ? { code, url } : null;
}
