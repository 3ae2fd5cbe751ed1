// A real OpenID Provider for the tests: device flow, RFC 9068 JWT access tokens through
// resource indicators, rotating refresh tokens, and devInteractions (built-in login and
// consent pages, for tests only). Usage: node server.mjs <port> [access-token-ttl-seconds]
// (the access tokens' lifetime, default 300; bench/soak.py makes it short to refresh often).
import Provider, { errors } from 'oidc-provider';
import { generateKeyPair, exportJWK } from 'jose';

const PORT = Number(process.argv[2]);
const ISSUER = `http://127.0.0.1:${PORT}`;
const AUDIENCE = 'urn:mcp-acp:proxy';
const ACCESS_TOKEN_TTL = Number(process.argv[3] ?? 300);
if (!Number.isInteger(ACCESS_TOKEN_TTL) || ACCESS_TOKEN_TTL < 1) {
  console.error(`access-token TTL must be a whole number of seconds ≥ 1, not ${process.argv[3]}`);
  process.exit(2);
}

async function signingJwk(kid) {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
}
// Two keys: access tokens are signed with the first until a test rotates to the second,
// which /jwks does not publish before that (see the switches below).
const FIRST_KID = 'test-rs256';
const NEXT_KID = 'test-rs256-next';
const keys = [await signingJwk(FIRST_KID), await signingJwk(NEXT_KID)];
let signingKid = FIRST_KID;

const provider = new Provider(ISSUER, {
  clients: [{
    client_id: 'mcp-acp-cli', token_endpoint_auth_method: 'none',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
    response_types: [], redirect_uris: [],
  }],
  jwks: { keys },
  scopes: ['openid', 'offline_access', 'email', 'mcp:tools'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, email: `${sub}@example.test`, email_verified: true }),
  }),
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf ?? AUDIENCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => {
        if (resource !== AUDIENCE) throw new errors.InvalidTarget();
        return {
          scope: 'mcp:tools', audience: AUDIENCE, accessTokenTTL: ACCESS_TOKEN_TTL,
          accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256', kid: signingKid } },
        };
      },
    },
  },
  issueRefreshToken: async (ctx, client, code) =>
    client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access'),
  rotateRefreshToken: true,
  ttl: { DeviceCode: 600, RefreshToken: 86400, IdToken: 300, Grant: 86400, Session: 3600, Interaction: 600 },
});

// Switches for tests, reached only on 127.0.0.1. POST /test/jwks?down=1 makes /jwks answer
// 503 (the keys unavailable for a while, everything else up); down=0 brings it back.
// POST /test/keys?rotate=1 publishes the second key and signs access tokens with it from
// then on (a key rotation); rotate=0 goes back to the first key alone.
let jwksDown = false;
provider.use(async (ctx, next) => {
  if (ctx.path === '/test/jwks' && ctx.method === 'POST') {
    jwksDown = ctx.query.down === '1';
    ctx.status = 204;
    return;
  }
  if (ctx.path === '/test/keys' && ctx.method === 'POST') {
    signingKid = ctx.query.rotate === '1' ? NEXT_KID : FIRST_KID;
    ctx.status = 204;
    return;
  }
  if (jwksDown && ctx.path === '/jwks') {
    ctx.status = 503;
    ctx.body = 'keys unavailable (test switch)';
    return;
  }
  await next();
  if (ctx.path === '/jwks' && signingKid === FIRST_KID && Array.isArray(ctx.body?.keys)) {
    ctx.body = { keys: ctx.body.keys.filter((key) => key.kid !== NEXT_KID) };
  }
});

const server = provider.listen(PORT, '127.0.0.1');
server.on('listening', () => { console.log(`ready ${ISSUER}`); });
