// A real OpenID Connect provider (panva's oidc-provider, certified) for the oauth authenticator's tests,
// started by tests/support/oidc_provider.py. Configured with one JSON document in OIDC_TEST_CONFIG:
//   client_id, client_secret, redirect_uris, token_endpoint_auth_method ("client_secret_basic" | "_post"),
//   accounts: {login: {groups: [...], email?}}, access_token_ttl (seconds), pkce_required, id_token_claims.
// Listens on a free 127.0.0.1 port and prints "LISTENING <issuer>" when it serves.
import http from 'node:http';
import { randomBytes } from 'node:crypto';

import Provider from 'oidc-provider';

const config = JSON.parse(process.env.OIDC_TEST_CONFIG || '{}');
const accounts = config.accounts || {};
const host = '127.0.0.1';

const server = http.createServer();
server.listen(0, host, () => {
  const issuer = `http://${host}:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: config.client_id,
      client_secret: config.client_secret,
      redirect_uris: config.redirect_uris,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: config.token_endpoint_auth_method || 'client_secret_basic',
    }],
    // any login name works on the development login page; the account's groups come from the config
    findAccount: async (ctx, id) => ({
      accountId: id,
      claims: async () => ({
        sub: id,
        email: (accounts[id] && accounts[id].email) || `${id}@example.org`,
        email_verified: true,
        name: id,
        preferred_username: id,
        groups: (accounts[id] && accounts[id].groups) || [],
      }),
    }),
    claims: {
      openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'], groups: ['groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    // the claims in the ID token too (not only at the user info endpoint), for userdata_from_id_token
    conformIdTokenClaims: !config.id_token_claims,
    // a refresh token with every code grant (not only with offline_access and prompt=consent)
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    pkce: { required: () => config.pkce_required !== false },
    ttl: { AccessToken: config.access_token_ttl || 3600 },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    features: {
      devInteractions: { enabled: true }, // the built-in login and consent pages
      revocation: { enabled: true },
    },
  });
  provider.proxy = false;
  server.on('request', provider.callback());
  console.log(`LISTENING ${issuer}`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
