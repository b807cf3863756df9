// A person's browser for the end-to-end scripts: keeps cookies by host (not port), as browsers
// do, follows no redirects; and the two things done with the pages it gets.
const jar = new Map();

export async function browse(url, init = {}) {
  const u = new URL(url);
  const cookie = [...jar.entries()].filter(([k]) => k.startsWith(u.hostname + "|")).map(([k, v]) => `${k.split("|")[1]}=${v}`).join("; ");
  const res = await fetch(url, { ...init, redirect: "manual", headers: { ...(init.headers || {}), cookie } });
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(";");
    const i = pair.indexOf("=");
    jar.set(u.hostname + "|" + pair.slice(0, i), pair.slice(i + 1));
  }
  return res;
}

// The value of the hidden (or prefilled) form field `name` in `html`.
export const field = (html, name) => html.match(new RegExp(`name="${name}" value="([^"]*)"`))[1];

// A form POST's request init.
export const form = (o) => ({ method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: new URLSearchParams(o).toString() });
