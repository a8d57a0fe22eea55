/**
 * The access keys of the top level, a server and a location (nginx allow/deny, auth_basic,
 * auth_basic_user_file): spread into their schemas by schema.ts. A level that sets one replaces
 * what it inherits for that key (nginx's inheritance), resolved by load.ts.
 */
import { z } from 'zod';

const RULE_MESSAGE = 'must be {"allow": "CIDR|address|all"} or {"deny": "CIDR|address|all"}';
const target = z.string({ error: 'must be "all", an address or a CIDR such as "10.0.0.0/8"' });

export const accessRuleSchema = z.union([
  z.strictObject({ allow: target.describe('nginx allow: "all", an IPv4/IPv6 address or CIDR') }),
  z.strictObject({ deny: target.describe('nginx deny: "all", an IPv4/IPv6 address or CIDR') }),
], { error: RULE_MESSAGE });

export const accessKeys = {
  access: z.array(accessRuleSchema, { error: `must be an array of rules, each ${RULE_MESSAGE}` }).optional()
    .describe('nginx allow/deny, in order: the first rule matching the client address decides (403 when it denies); no match allows. IPv4-mapped IPv6 clients match IPv4 rules. Replaces the list of the enclosing level (server, top level); [] = no rules'),
  authBasic: z.string({ error: 'must be a realm (printable text without ") or "off"' })
    .regex(/^[\x20\x21\x23-\x5b\x5d-\x7e]{1,200}$/, { error: 'must be a realm (printable text without " or \\, at most 200 characters) or "off"' }).optional()
    .describe('nginx auth_basic: the realm of HTTP Basic authentication (401 with WWW-Authenticate: Basic realm="..."); "off" turns off an inherited one. Needs authBasicUserFile'),
  authBasicUserFile: z.string({ error: 'must be a file path' }).min(1, { error: 'must be a file path' }).optional()
    .describe('nginx auth_basic_user_file: htpasswd file (bcrypt $2y$, SHA-crypt $5$/$6$, apr1; {SHA}/{SSHA}/{PLAIN} with a warning), read at load and on every reload (relative paths: to the config file)'),
};
