/**
 * `sessionlb import-nginx`: reads the http and stream parts of an nginx configuration (upstreams,
 * servers, locations and the proxy_* settings our users have) and produces the equivalent sessionlb
 * configuration. First a real tokenizer/parser for nginx's syntax (what `ngx_conf_read_token`
 * accepts: directives `name arg ... ;`, blocks `name arg ... { ... }`, single and double quoted
 * strings, backslash escapes, `${var}` inside words, `#` comments), then the conversion.
 *
 * `include` is followed where it stands (includes.ts), as nginx reads it.
 *
 * Nothing is dropped silently: every directive or parameter that is not converted is a warning
 * naming its file and line. proxy_next_upstream* and proxy_*_timeout are per location in nginx but per
 * upstream in sessionlb: they are moved onto the upstream the location proxies to, with a
 * warning when locations sharing an upstream disagree.
 *
 * Access restrictions (allow/deny, auth_basic) are converted; one that cannot be (auth_request,
 * satisfy any, ...) is an error unless `allowOpen` (access-settings.ts).
 *
 * The parts: tokenizer.ts (syntax -> directive tree), includes.ts (`include`), converter.ts and the
 * block files it uses (directive tree -> configuration), diagnostics.ts, config-json.ts (the output).
 */
import { resolve } from 'node:path';
import type { RawConfig } from '../../config/schema.js';
import { parseNginx } from './tokenizer.js';
import { IncludeExpander } from './includes.js';
import { Conversion } from './conversion.js';
import { convert } from './converter.js';
import { decodeLine, type ImportDiagnostic } from './diagnostics.js';

export { NginxSyntaxError, parseNginx, tokenize, type NginxDirective } from './tokenizer.js';
export { formatDiagnostic, type ImportDiagnostic } from './diagnostics.js';
export { formatConfigJson } from './config-json.js';

export interface ImportResult {
  /** The sessionlb configuration (not yet validated: pass it to `loadConfig`). */
  config: RawConfig;
  /** Directives and parameters that were not converted, and conflicts that were resolved. */
  warnings: ImportDiagnostic[];
  /** Differences in behaviour worth knowing that need no action. */
  notes: ImportDiagnostic[];
  /** What makes the result unusable (bad values, unsupported addresses); the CLI exits 1. */
  errors: ImportDiagnostic[];
  /**
   * Error page files the result names that are not on this machine (each with a warning): they
   * may be on the target machine only, so the CLI writes the result although loading it here fails.
   */
  missingFiles: string[];
}

/**
 * Converts nginx configuration text into sessionlb's configuration. Throws NginxSyntaxError
 * (with the line) when the text is not nginx syntax; everything else is reported in the result.
 */
export function importNginx(text: string, file: string, options: { allowOpen?: boolean } = {}): ImportResult {
  const includes = new IncludeExpander(file);
  const tree = includes.expand(parseNginx(text, file), [resolve(file)]);
  const c = new Conversion(includes.files);
  c.allowOpen = options.allowOpen ?? false;
  const config = convert(c, tree);
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
    missingFiles: [...c.missingFiles],
  };
}
