// A real OpenID provider (the npm package oidc-provider, OpenID Certified)
// for tests/api/oidc.rs: one confidential client with the client_credentials
// grant, JWT access tokens for the resource indicator = fhirbridge's
// audience, carrying a `patient` claim (SMART launch context) and the scope
// `patient/*.rs`.
//
//   node tests/oidc/provider.mjs PORT [PATIENT_ID] [AUDIENCE]
//
// oidc-provider is found in $FHIRBRIDGE_OIDC_PROVIDER_DIR/node_modules
// (.ci/run installs it there). Prints "ready ISSUER" on stdout once listening.
import { createRequire } from 'node:module';
import { generateKeyPairSync } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import path from 'node:path';

const [port, patient = 'oidc-patient', audience = 'https://fhir.test/fhir'] = process.argv.slice(2);
if (!port) {
  console.error('usage: node provider.mjs PORT [PATIENT_ID] [AUDIENCE]');
  process.exit(2);
}
const dir = process.env.FHIRBRIDGE_OIDC_PROVIDER_DIR;
if (!dir) {
  console.error('FHIRBRIDGE_OIDC_PROVIDER_DIR is not set (the directory holding node_modules/oidc-provider)');
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(dir), 'package.json'));
const { default: Provider } = await import(pathToFileURL(require.resolve('oidc-provider')).href);

const issuer = `http://127.0.0.1:${port}`;
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'oidc-test-rs256', alg: 'RS256', use: 'sig' };
const scope = 'patient/*.rs';

const provider = new Provider(issuer, {
  cookies: { keys: ['fhirbridge-e2e-cookie-key'] },
  clients: [{
    client_id: 'fhirbridge-e2e',
    client_secret: 'e2e-secret-not-a-real-one',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [jwk] },
  scopes: [scope],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        if (resourceIndicator !== audience) {
          throw new Error(`unknown resource ${resourceIndicator}`);
        }
        return {
          scope,
          audience,
          accessTokenTTL: 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  extraTokenClaims: () => ({ patient }),
});
provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`ready ${issuer}`);
});
