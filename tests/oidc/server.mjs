// A real OpenID provider for the integration tests: panva/oidc-provider on a loopback port.
// Signing keys (RSA and P-256, random key ids) are generated at every start, so a restart is a
// key rotation. Device clients use the client_credentials grant; access tokens are JWTs for the
// requested resource (the audience) with extra claims per client.
//
// Single sign-on: a test registers its own client (open dynamic registration at /reg, since
// the gateway's callback port is only known then) and signs people in through the provider's
// development login form, where any login works. Accounts' claims are below; the ID token
// carries them.
//
//   node tests/oidc/server.mjs <port>
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const issuer = `http://127.0.0.1:${port}`;
const kid = (p) => `${p}-${randomBytes(4).toString('hex')}`;
const rsa = { ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }), kid: kid('rsa'), alg: 'RS256', use: 'sig' };
const ec = { ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }), kid: kid('ec'), alg: 'ES256', use: 'sig' };

// Claims each client's tokens carry.
const claims = {
  'device-alpha': { groups: ['field-ops'], unit: { name: 'alpha', clearance: 3 } },
  'device-ec': { groups: ['field-ops'], unit: { name: 'echo', clearance: 1 } },
  'device-banned': { groups: ['field-ops', 'banned'] },
  'device-nobody': { groups: [] },
  'device-short': { groups: ['field-ops'] },
  gateway: {},
};
const clients = Object.keys(claims).map((id) => ({
  client_id: id,
  client_secret: `secret-${id}`,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
}));

// People who sign in, by login: groups decide their role through the org's claim rules.
const people = {
  ana: { email: 'ana@kit.lan', groups: ['kit-operators'] },
  lead: { email: 'lead@kit.lan', groups: ['kit-operators', 'kit-leads'] },
  mallory: { email: 'mallory@kit.lan', groups: ['kit-operators', 'banned'] },
};

const provider = new Provider(issuer, {
  clients,
  conformIdTokenClaims: false,
  claims: { openid: ['sub', 'groups'], email: ['email', 'email_verified'], profile: ['name'] },
  findAccount: (ctx, sub) => ({
    accountId: sub,
    claims: () => ({ sub, name: sub, email_verified: true, groups: [], ...(people[sub] ?? {}) }),
  }),
  jwks: { keys: [rsa, ec] },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:peat:gateway',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => ({
        scope: 'enroll',
        audience: resource === 'urn:peat:opaque' ? 'urn:peat:gateway' : resource,
        accessTokenTTL: client.clientId === 'device-short' ? 2 : 600,
        accessTokenFormat: resource === 'urn:peat:opaque' ? 'opaque' : 'jwt',
        jwt: { sign: { alg: client.clientId === 'device-ec' ? 'ES256' : 'RS256' } },
      }),
    },
  },
  extraTokenClaims: (ctx, token) => claims[token.clientId] ?? {},
});
provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
