/**
 * nginx access directives at http, server and location level -> `access`, `authBasic`,
 * `authBasicUserFile` at the same level (sessionlb inherits them as nginx does: a level that
 * sets one replaces its parent's). A directive that restricts access and cannot be mapped
 * (`auth_request`, `satisfy any`, `deny` inside `if`, `internal`, `valid_referers`, `limit_except`,
 * a location with such directives that is not converted, ...) is an error: a silently opened
 * location is worse than a failed migration. `--allow-open` makes them warnings.
 */
import { resolve } from 'node:path';
import { compileIpRule } from '../../net/ip-rules.js';
import type { RawAccess } from '../../config/schema.js';
import type { Conversion, Mutable } from './conversion.js';
import type { NginxDirective } from './tokenizer.js';

/** What one level's access directives give, in the order written. */
export type AccessScope = Mutable<RawAccess>;

/** Directives that restrict who gets through and that sessionlb cannot map. */
const UNMAPPABLE: Record<string, string> = {
  auth_request: 'subrequest authentication (auth_request) is not supported by sessionlb',
  auth_request_set: 'subrequest authentication (auth_request) is not supported by sessionlb',
  auth_jwt: 'JWT authentication (nginx Plus auth_jwt) is not supported by sessionlb',
  auth_jwt_key_file: 'JWT authentication (nginx Plus auth_jwt) is not supported by sessionlb',
  internal: '"internal" (a location only internal redirects reach) is not supported by sessionlb',
  valid_referers: 'referer checks (valid_referers, $invalid_referer) are not supported by sessionlb',
  secure_link: 'secure links (secure_link) are not supported by sessionlb',
  secure_link_md5: 'secure links (secure_link) are not supported by sessionlb',
  secure_link_secret: 'secure links (secure_link) are not supported by sessionlb',
  limit_except: 'method restrictions (limit_except) are not supported by sessionlb',
  auth_digest: 'digest authentication is not supported by sessionlb',
};

/** Whether `d` is one of the directives this file handles. */
export function isAccessDirective(d: NginxDirective): boolean {
  if (d.name === 'allow' || d.name === 'deny' || d.name === 'auth_basic' || d.name === 'auth_basic_user_file' || d.name === 'satisfy') return true;
  if (d.name in UNMAPPABLE) return true;
  return d.name === 'if' && d.block !== null && restricts(d.block);
}

/** Whether a block holds anything that restricts access (a location dropped with it would open up). */
export function restricts(block: readonly NginxDirective[]): boolean {
  return block.some((d) => d.name === 'allow' || d.name === 'deny' || (d.name === 'auth_basic' && d.args[0] !== 'off')
    || d.name in UNMAPPABLE || (d.name === 'return' && /^40[13]$/.test(d.args[0] ?? ''))
    || (d.name === 'satisfy' && d.args[0] === 'any') || (d.block !== null && d.name === 'if' && restricts(d.block)));
}

/** An access restriction that is not carried over: an error, or with --allow-open a warning. */
export function notCarriedOver(c: Conversion, line: number, message: string): void {
  const text = `${message}: the converted configuration would let through requests nginx refuses`;
  if (c.allowOpen) c.warn(line, `${text} (--allow-open)`);
  else c.error(line, `${text}; refusing to convert (--allow-open converts it anyway, opened)`);
}

/** One access directive of a level into `scope`. */
export function accessDirective(c: Conversion, d: NginxDirective, scope: AccessScope): void {
  switch (d.name) {
    case 'allow':
    case 'deny': {
      const target = d.args[0];
      if (d.args.length !== 1 || target === undefined) {
        c.error(d.line, `invalid number of arguments in "${d.name}" directive`);
        return;
      }
      if (target.startsWith('unix:')) {
        notCarriedOver(c, d.line, `"${d.name} unix:": sessionlb has no unix socket listeners, so this rule cannot be carried over`);
        return;
      }
      const rule = compileIpRule(d.name === 'allow', target);
      if (typeof rule === 'string') {
        c.error(d.line, `"${d.name}": ${rule}`);
        return;
      }
      (scope.access ??= []).push(d.name === 'allow' ? { allow: target } : { deny: target });
      return;
    }
    case 'auth_basic': {
      const realm = d.args[0];
      if (d.args.length !== 1 || realm === undefined) {
        c.error(d.line, 'invalid number of arguments in "auth_basic" directive');
        return;
      }
      if (realm.includes('$')) {
        notCarriedOver(c, d.line, `"auth_basic ${realm}": a realm with variables is not supported by sessionlb`);
        return;
      }
      if (realm !== 'off' && !/^[\x20\x21\x23-\x5b\x5d-\x7e]{1,200}$/.test(realm)) {
        notCarriedOver(c, d.line, `"auth_basic": the realm "${realm}" has characters sessionlb does not send (", \\, control or non-ASCII)`);
        return;
      }
      scope.authBasic = realm;
      return;
    }
    case 'auth_basic_user_file': {
      const file = d.args[0];
      if (d.args.length !== 1 || file === undefined) {
        c.error(d.line, 'invalid number of arguments in "auth_basic_user_file" directive');
        return;
      }
      if (file.includes('$')) {
        notCarriedOver(c, d.line, `"auth_basic_user_file ${file}": a file name with variables is not supported by sessionlb`);
        return;
      }
      // nginx: relative to its configuration directory; sessionlb's would be relative to the JSON file.
      scope.authBasicUserFile = resolve(c.configDir(), file);
      return;
    }
    case 'satisfy':
      if (d.args[0] === 'all' && d.args.length === 1) return; // nginx's default
      notCarriedOver(c, d.line, `"satisfy ${d.args.join(' ')}": sessionlb checks the access rules and then the password (satisfy all) only`);
      return;
    case 'if':
      notCarriedOver(c, d.line, '"if" with access restrictions inside (deny, return 403/401, ...) is not supported by sessionlb');
      return;
    default:
      notCarriedOver(c, d.line, `"${d.name}": ${UNMAPPABLE[d.name] ?? 'not supported by sessionlb'}`);
  }
}

/** `scope`'s keys on the output object of its level (in the documented order, after the rest). */
export function writeAccess(scope: AccessScope, out: Record<string, unknown>): void {
  if (scope.access !== undefined) out.access = scope.access;
  if (scope.authBasic !== undefined) out.authBasic = scope.authBasic;
  if (scope.authBasicUserFile !== undefined) out.authBasicUserFile = scope.authBasicUserFile;
}
