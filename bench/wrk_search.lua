-- wrk script: rotate through a mix of catalogue searches.
local paths = {
  "/api/v1/datasets?q=air+quality",
  "/api/v1/datasets?q=energy&theme=energy",
  "/api/v1/datasets?q=bus&spectrum=open",
  "/api/v1/datasets?q=tree+canopy",
  "/api/v1/datasets?q=flood&personal_data=false",
  "/api/v1/datasets?q=parking+harbour",
  "/api/v1/datasets?theme=mobility&spectrum=shared_group",
  "/api/v1/datasets?q=solar+potential&sort=updated",
  "/api/v1/datasets?q=traffic+counts&page=2",
  "/api/v1/datasets?q=waste&format=CSV",
}
local i = 0
request = function()
  i = (i % #paths) + 1
  return wrk.format("GET", paths[i])
end
