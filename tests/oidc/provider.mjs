// A real OpenID provider for Cairn's SSO tests: the certified `oidc-provider`
// with its development sign-in pages (any password; the login names an account).
//
//   node provider.mjs  (configured by environment variables, see below)
//
// OIDC_PORT       port on 127.0.0.1
// OIDC_KEYS       path of a JSON Web Key Set with the private signing keys (first is used)
// OIDC_ACCOUNTS   path of a JSON object {login: {claims…}}; read again at every sign-in and
//                 token, so a test can change a user's groups between two sign-ins
// OIDC_CLIENTS    path of a JSON array of client metadata (client_id, client_secret, redirect_uris)
// OIDC_AUDIENCE   the audience of the JWT access tokens (the resource server: Cairn)
import fs from 'node:fs';
import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const readJson = (path) => JSON.parse(fs.readFileSync(path, 'utf8'));
const audience = process.env.OIDC_AUDIENCE;

function accountClaims(login) {
  const accounts = readJson(process.env.OIDC_ACCOUNTS);
  const claims = accounts[login];
  return claims ? { sub: claims.sub || login, ...claims } : undefined;
}

const provider = new Provider(issuer, {
  clients: readJson(process.env.OIDC_CLIENTS),
  jwks: readJson(process.env.OIDC_KEYS),
  async findAccount(ctx, id) {
    const claims = accountClaims(id);
    if (!claims) return undefined;
    return { accountId: id, async claims() { return claims; } };
  },
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name', 'email', 'groups', 'dept', 'clearance'],
  },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'openid profile',
        audience,
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  async extraTokenClaims(ctx, token) {
    const claims = token.accountId ? accountClaims(token.accountId) : undefined;
    if (!claims) return {};
    const { sub, ...rest } = claims;
    return rest;
  },
  ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 600, Grant: 600 },
});
provider.listen(port, '127.0.0.1', () => { console.log(`ready ${issuer}`); });
