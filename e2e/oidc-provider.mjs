// A real OpenID Connect provider for the tests: the certified `oidc-provider`
// package, with its development sign-in pages (any login name, any password),
// an RS256 key made at start, PKCE required, and one client: CityTrust.
//
//   node oidc-provider.mjs PORT REDIRECT_URI CLIENT_SECRET
//
// Profile claims stay out of the ID token (the default, conforming
// behaviour), so CityTrust must fetch them from the userinfo endpoint. The
// `household` scope releases `household_id`, the register's word for whose
// smart-meter records a person's are (CityTrust's `records` claim).
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const [port, redirectUri, clientSecret] = process.argv.slice(2);
if (!port || !redirectUri || !clientSecret) {
  console.error('usage: node oidc-provider.mjs PORT REDIRECT_URI CLIENT_SECRET');
  process.exit(2);
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', alg: 'RS256', use: 'sig' };

// Accounts: whoever signs in at the development page, with a profile made from the name.
const findAccount = async (_ctx, id) => ({
  accountId: id,
  async claims() {
    return {
      sub: id,
      preferred_username: id,
      name: id.split(/[._-]/).map(w => w.charAt(0).toUpperCase() + w.slice(1)).join(' '),
      email: `${id}@residents.example`,
      email_verified: true,
      // The city's register vouches for one household: the demo's H0012.
      ...(id === 'marta.puig' ? { household_id: 'H0012' } : {}),
    };
  },
});

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: 'citytrust',
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [signingKey] },
  findAccount,
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    household: ['household_id'],
  },
  pkce: { required: () => true },
  cookies: { keys: ['citytrust-e2e-cookie-key-not-secret'] },
  features: { devInteractions: { enabled: true } },
});
provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc-provider listening on http://127.0.0.1:${port}`);
});
